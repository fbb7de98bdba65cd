from taskgroup.logs import log_to_file
from taskgroup.stages.affinity import higher_order_affinity

log_to_file(snakemake.log[0])
higher_order_affinity(snakemake.input.values, snakemake.input.tasks, snakemake.output[0])
