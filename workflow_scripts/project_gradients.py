from taskgroup.logs import log_to_file
from taskgroup.stages.estimate import project_gradients

log_to_file(snakemake.log[0])
projection = snakemake.params.projection
project_gradients(
    examples_path=snakemake.input.examples,
    tasks_path=snakemake.input.tasks,
    model_path=snakemake.input.model,
    projected_path=snakemake.output.projected,
    projection_path=snakemake.output.projection,
    structure=projection["structure"],
    dim=projection["dim"],
    factor_dim=projection["factor_dim"],
    kind=projection["kind"],
    seed=projection["seed"],
    batch_size=projection["batch_size"],
    threads=snakemake.threads,
)
