from taskgroup.estimate.finetune import FinetuneSettings
from taskgroup.estimate.settings import GradientEstimateSettings
from taskgroup.logs import log_to_file
from taskgroup.stages.validate import calibrate_estimate

log_to_file(snakemake.log[0])
params = snakemake.params
calibrate_estimate(
    examples_path=snakemake.input.examples,
    tasks_path=snakemake.input.tasks,
    model_path=snakemake.input.model,
    subsets_path=snakemake.input.subsets,
    projected_path=snakemake.input.projected,
    projection_path=snakemake.input.projection,
    other_seed_path=snakemake.output.other_seed,
    l2_curve_path=snakemake.output.l2_curve,
    task_scales_path=snakemake.output.get("task_scales"),
    n_subsets=params.held_out["n_subsets"],
    seed=params.held_out["seed"],
    finetune=FinetuneSettings.from_mapping(params.finetune),
    estimate=GradientEstimateSettings.from_mapping(params.estimate),
    l2_candidates=params.estimate["l2_candidates"],
    threads=snakemake.threads,
    metric=params.metric,
    lr_curve_path=snakemake.input.get("lr_curve"),
)
