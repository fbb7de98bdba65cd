from taskgroup.logs import log_to_file
from taskgroup.stages.grouping import cluster_tasks

log_to_file(snakemake.log[0])
cluster_tasks(
    affinity_path=snakemake.input.affinity,
    tasks_path=snakemake.input.tasks,
    grouping_path=snakemake.output.grouping,
    objective_path=snakemake.output.objective,
    method=snakemake.params.method,
    similarity=snakemake.params.similarity,
    n_clusters=snakemake.params.n_clusters,
    seed=snakemake.params.seed,
)
