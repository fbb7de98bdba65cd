from taskgroup.logs import log_to_file
from taskgroup.stages.subsets import pair_design

log_to_file(snakemake.log[0])
pair_design(tasks_path=snakemake.input.tasks, subsets_path=snakemake.output[0])
