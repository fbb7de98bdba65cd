from taskgroup.logs import log_to_file
from taskgroup.stages.subsets import sample_subsets

log_to_file(snakemake.log[0])
sample_subsets(
    tasks_path=snakemake.input.tasks,
    subsets_path=snakemake.output.subsets,
    pair_counts_path=snakemake.output.pair_counts,
    size=snakemake.params.size,
    count=snakemake.params.n_subsets,
    seed=snakemake.params.seed,
)
