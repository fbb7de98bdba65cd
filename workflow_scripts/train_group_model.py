from taskgroup.logs import log_to_file
from taskgroup.stages.train import train_group_model

log_to_file(snakemake.log[0])
train_group_model(
    examples_path=snakemake.input.examples,
    tasks_path=snakemake.input.tasks,
    members=snakemake.params.members,
    group_key=snakemake.wildcards.key,
    results_path=snakemake.output.results,
    model_paths=snakemake.output.models,
    hidden_sizes=snakemake.params.hidden_sizes,
    training=snakemake.params.training,
    seeds=snakemake.params.seeds,
    threads=snakemake.threads,
    metric=snakemake.params.metric,
    options=snakemake.params.get("options"),
    variant=snakemake.wildcards.variant,
    diagnostics_path=snakemake.output.get("diagnostics"),
    selection=snakemake.params.selection,
)
