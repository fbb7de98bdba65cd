from taskgroup.logs import log_to_file
from taskgroup.stages.evaluate import plot_variants

log_to_file(snakemake.log[0])
plot_variants(
    changes_path=snakemake.input.changes,
    clusters_path=snakemake.input.clusters,
    figure_path=snakemake.output[0],
    primary=snakemake.params.primary,
)
