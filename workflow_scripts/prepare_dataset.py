from taskgroup.logs import log_to_file
from taskgroup.stages.prepare import prepare_dataset

log_to_file(snakemake.log[0])
prepare_dataset(
    snakemake.params.kind,
    snakemake.params.settings,
    snakemake.output.examples,
    snakemake.output.tasks,
)
