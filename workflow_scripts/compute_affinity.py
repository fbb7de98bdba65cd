from taskgroup.logs import log_to_file
from taskgroup.stages.grouping import compute_affinity

log_to_file(snakemake.log[0])
compute_affinity(snakemake.input.values, snakemake.input.tasks, snakemake.output[0])
