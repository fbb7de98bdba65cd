from taskgroup.group.clustering import ClusteringSettings
from taskgroup.logs import log_to_file
from taskgroup.stages.cluster import cluster_tasks

log_to_file(snakemake.log[0])
cluster_tasks(
    affinity_path=snakemake.input.affinity,
    tasks_path=snakemake.input.tasks,
    grouping_paths=list(snakemake.output.groupings),
    objective_path=snakemake.output.objective,
    scan_path=snakemake.output.scan,
    source=snakemake.wildcards.source,
    methods=snakemake.params.methods,
    settings=ClusteringSettings(**snakemake.params.clustering),
    values_path=snakemake.input.values or None,
    auto_folds=snakemake.params.auto_folds,
)
