from taskgroup.group.surrogates import SurrogateSettings
from taskgroup.logs import log_to_file
from taskgroup.stages.surrogates import fit_surrogates

log_to_file(snakemake.log[0])
fit_surrogates(
    values_path=snakemake.input.values,
    subsets_path=snakemake.input.subsets,
    pairs_path=snakemake.input.pairs,
    tasks_path=snakemake.input.tasks,
    coefficients_path=snakemake.output.coefficients,
    quality_path=snakemake.output.quality,
    negative_transfer_path=snakemake.output.negative_transfer,
    selected_path=snakemake.output.selected,
    figure_path=snakemake.output.figure,
    settings=SurrogateSettings(**snakemake.params.surrogates),
    forward_path=snakemake.input.get("forward"),
    comparison_path=snakemake.output.get("comparison"),
    every_pair=snakemake.params.get("pair_sample") is None,
)
