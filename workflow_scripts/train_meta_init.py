from taskgroup.logs import log_to_file
from taskgroup.stages.meta_init import train_meta_init

log_to_file(snakemake.log[0])
train_meta_init(
    examples_path=snakemake.input.examples,
    tasks_path=snakemake.input.tasks,
    model_path=snakemake.output.model,
    metrics_path=snakemake.output.metrics,
    hidden_sizes=snakemake.params.hidden_sizes,
    training=snakemake.params.training,
    keep_best_epoch=snakemake.params.keep_best_epoch,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
    metric=snakemake.params.metric,
    options=snakemake.params.get("options"),
    weights_path=snakemake.output.get("weights"),
    diagnostics_path=snakemake.output.get("diagnostics"),
)
