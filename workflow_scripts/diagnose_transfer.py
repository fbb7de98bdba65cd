from taskgroup.logs import log_to_file
from taskgroup.stages.evaluate import diagnose_transfer

log_to_file(snakemake.log[0])
diagnose_transfer(
    grouping_paths={name: snakemake.input[name] for name in snakemake.params.groupings},
    diagnostics_paths=list(snakemake.input.diagnostics),
    gap_path=snakemake.output.gap,
    figure_path=snakemake.output.figure,
    primary=snakemake.params.primary,
    variant=snakemake.params.variant,
)
