from taskgroup.estimate.settings import GradientEstimateSettings
from taskgroup.logs import log_to_file
from taskgroup.stages.estimate import estimate_subsets

log_to_file(snakemake.log[0])
estimate_subsets(
    projected_path=snakemake.input.projected,
    projection_path=snakemake.input.projection,
    model_path=snakemake.input.model,
    subsets_path=snakemake.input.subsets,
    tasks_path=snakemake.input.tasks,
    output_path=snakemake.output[0],
    chunk=int(snakemake.wildcards.chunk),
    chunk_size=snakemake.params.chunk_size,
    settings=GradientEstimateSettings.from_mapping(snakemake.params.estimate),
    l2_curve_path=snakemake.input.get("l2_curve"),
    task_scales_path=snakemake.input.get("task_scales"),
    threads=snakemake.threads,
    memory_mb=snakemake.resources.mem_mb,
    metric=snakemake.params.metric,
)
