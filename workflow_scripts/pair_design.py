from taskgroup.data.designs import PairSample
from taskgroup.logs import log_to_file
from taskgroup.stages.subsets import pair_design

log_to_file(snakemake.log[0])
sample = snakemake.params.get("pair_sample")
pair_design(
    tasks_path=snakemake.input.tasks,
    subsets_path=snakemake.output[0],
    sample=None if sample is None else PairSample(**sample),
)
