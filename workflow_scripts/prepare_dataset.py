from taskgroup.data.datasets import dataset_kind
from taskgroup.logs import log_to_file
from taskgroup.stages.prepare import prepare_dataset

log_to_file(snakemake.log[0])
kind = snakemake.params.kind
prepare_dataset(
    kind,
    dataset_kind(kind).spec(snakemake.params.settings),
    snakemake.output.examples,
    snakemake.output.tasks,
    snakemake.output.decisions,
)
