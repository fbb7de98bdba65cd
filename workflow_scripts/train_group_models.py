from taskgroup.logs import log_to_file
from taskgroup.stages.train import train_group_models

log_to_file(snakemake.log[0])
train_group_models(
    examples_path=snakemake.input.examples,
    tasks_path=snakemake.input.tasks,
    groups=snakemake.params.groups,
    results_path=snakemake.output.results,
    models_dir=snakemake.params.models_dir,
    code_paths=list(snakemake.input.code),
    hidden_sizes=snakemake.params.hidden_sizes,
    training=snakemake.params.training,
    seeds=snakemake.params.seeds,
    threads=snakemake.threads,
    metric=snakemake.params.metric,
    options=snakemake.params.get("options"),
    variant=snakemake.wildcards.variant,
    diagnostics_path=snakemake.output.get("diagnostics"),
    selection=snakemake.params.selection,
    budget=snakemake.params.budget,
    patience=snakemake.params.patience,
)
