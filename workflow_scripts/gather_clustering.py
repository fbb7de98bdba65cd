from taskgroup.logs import log_to_file
from taskgroup.stages.cluster import gather_clustering

log_to_file(snakemake.log[0])
gather_clustering(
    objective_paths=list(snakemake.input.objectives),
    table_path=snakemake.output.table,
    figure_path=snakemake.output.figure,
)
