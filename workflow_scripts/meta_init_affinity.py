from taskgroup.logs import log_to_file
from taskgroup.stages.affinity import meta_init_affinity

log_to_file(snakemake.log[0])
meta_init_affinity(
    examples_path=snakemake.input.examples,
    tasks_path=snakemake.input.tasks,
    model_path=snakemake.input.model,
    output_path=snakemake.output[0],
    source=snakemake.wildcards.source,
    covariance_features=snakemake.params.covariance_features,
    threads=snakemake.threads,
)
