from taskgroup.logs import log_to_file
from taskgroup.stages.estimate import estimate_subsets

log_to_file(snakemake.log[0])
estimate = snakemake.params.estimate
estimate_subsets(
    projected_path=snakemake.input.projected,
    projection_path=snakemake.input.projection,
    model_path=snakemake.input.model,
    subsets_path=snakemake.input.subsets,
    tasks_path=snakemake.input.tasks,
    output_path=snakemake.output[0],
    chunk=int(snakemake.wildcards.chunk),
    chunk_size=snakemake.params.chunk_size,
    l2=estimate["l2"],
    newton_steps=estimate["newton_steps"],
    max_relative_shift=estimate["max_relative_shift"],
    threads=snakemake.threads,
    metric=snakemake.params.metric,
)
