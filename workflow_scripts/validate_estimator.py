from taskgroup.estimate.finetune import FinetuneSettings
from taskgroup.group.clustering import ClusteringSettings
from taskgroup.logs import log_to_file
from taskgroup.stages.validate import validate_estimator

log_to_file(snakemake.log[0])
validation = snakemake.params.validation
validate_estimator(
    examples_path=snakemake.input.examples,
    tasks_path=snakemake.input.tasks,
    model_path=snakemake.input.model,
    subsets_path=snakemake.input.subsets,
    estimate_path=snakemake.input.estimate,
    other_seed_path=snakemake.input.other_seed,
    l2_curve_path=snakemake.input.l2_curve,
    per_subset_path=snakemake.output.per_subset,
    summary_path=snakemake.output.summary,
    validity_path=snakemake.output.validity,
    figure_path=snakemake.output.figure,
    n_subsets=validation["n_subsets"],
    seed=validation["seed"],
    finetune=FinetuneSettings.from_mapping(snakemake.params.finetune),
    clustering=ClusteringSettings(**snakemake.params.clustering),
    clustering_method=snakemake.params.clustering_method,
    scales=validation["scales"],
    threads=snakemake.threads,
    metric=snakemake.params.metric,
    lr_curve_path=snakemake.input.get("lr_curve"),
)
