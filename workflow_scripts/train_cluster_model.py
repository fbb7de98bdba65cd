from taskgroup.logs import log_to_file
from taskgroup.stages.training import train_group_model

log_to_file(snakemake.log[0])
train_group_model(
    examples_path=snakemake.input.examples,
    tasks_path=snakemake.input.tasks,
    grouping_path=snakemake.input.grouping,
    grouping=snakemake.wildcards.grouping,
    group=int(snakemake.wildcards.group),
    results_path=snakemake.output.results,
    model_path=snakemake.output.model,
    hidden_sizes=snakemake.params.hidden_sizes,
    training=snakemake.params.training,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
    metric=snakemake.params.metric,
)
