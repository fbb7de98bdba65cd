from taskgroup.estimate.settings import ProjectionSettings
from taskgroup.logs import log_to_file
from taskgroup.stages.estimate import project_gradients

log_to_file(snakemake.log[0])
project_gradients(
    examples_path=snakemake.input.examples,
    tasks_path=snakemake.input.tasks,
    model_path=snakemake.input.model,
    projected_path=snakemake.output.projected,
    projection_path=snakemake.output.projection,
    settings=ProjectionSettings.from_mapping(snakemake.params.projection),
    memory_mb=snakemake.resources.mem_mb,
    threads=snakemake.threads,
)
