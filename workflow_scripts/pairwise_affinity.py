from taskgroup.logs import log_to_file
from taskgroup.stages.affinity import pairwise_affinity

log_to_file(snakemake.log[0])
pairwise_affinity(
    values_path=snakemake.input.values,
    tasks_path=snakemake.input.tasks,
    output_path=snakemake.output[0],
    every_pair=snakemake.params.get("pair_sample") is None,
)
