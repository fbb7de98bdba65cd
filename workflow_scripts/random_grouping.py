from taskgroup.logs import log_to_file
from taskgroup.stages.cluster import random_grouping

log_to_file(snakemake.log[0])
random_grouping(reference_path=snakemake.input.reference, output_paths=list(snakemake.output))
