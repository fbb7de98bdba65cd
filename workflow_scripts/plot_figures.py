from taskgroup.logs import log_to_file
from taskgroup.stages.evaluate import plot_figures

log_to_file(snakemake.log[0])
plot_figures(
    affinity_path=snakemake.input.affinity,
    clusters_path=snakemake.input.clusters,
    per_task_path=snakemake.input.per_task,
    tasks_path=snakemake.input.tasks,
    heatmap_path=snakemake.output.heatmap,
    gain_path=snakemake.output.gain,
    primary=snakemake.params.primary,
    variant=snakemake.params.variant,
)
