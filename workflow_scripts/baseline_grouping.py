from taskgroup.logs import log_to_file
from taskgroup.stages.cluster import baseline_grouping

log_to_file(snakemake.log[0])
baseline_grouping(snakemake.wildcards.grouping, snakemake.input.tasks, snakemake.output[0])
