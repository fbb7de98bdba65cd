from taskgroup.logs import log_to_file
from taskgroup.stages.forward import forward_selection

log_to_file(snakemake.log[0])
params = snakemake.params
forward_selection(
    estimator=params.estimator,
    tasks_path=snakemake.input.tasks,
    model_path=snakemake.input.model,
    values_path=snakemake.output.values,
    selection_path=snakemake.output.selection,
    max_size=params.max_size,
    min_improvement=params.min_improvement,
    projected_path=snakemake.input.get("projected"),
    projection_path=snakemake.input.get("projection"),
    examples_path=snakemake.input.get("examples"),
    estimate=params.get("estimate"),
    training=params.get("training"),
    seed=params.get("seed"),
    threads=snakemake.threads,
    metric=params.metric,
)
