from taskgroup.logs import log_to_file
from taskgroup.stages.subset_values import gather_subset_values

log_to_file(snakemake.log[0])
gather_subset_values(list(snakemake.input.chunks), snakemake.output[0])
