from taskgroup.estimate.finetune import FinetuneSettings
from taskgroup.estimate.forward import ForwardSettings
from taskgroup.estimate.settings import GradientEstimateSettings
from taskgroup.logs import log_to_file
from taskgroup.stages.forward import forward_selection

log_to_file(snakemake.log[0])
params = snakemake.params
# Only the configured estimator's settings are in params (see estimator_params).
estimate, finetune = params.get("estimate"), params.get("finetune")
forward_selection(
    estimator=params.estimator,
    tasks_path=snakemake.input.tasks,
    model_path=snakemake.input.model,
    values_path=snakemake.output.values,
    selection_path=snakemake.output.selection,
    settings=ForwardSettings(**params.selection),
    projected_path=snakemake.input.get("projected"),
    projection_path=snakemake.input.get("projection"),
    examples_path=snakemake.input.get("examples"),
    estimate=None if estimate is None else GradientEstimateSettings.from_mapping(estimate),
    l2_curve_path=snakemake.input.get("l2_curve"),
    task_scales_path=snakemake.input.get("task_scales"),
    finetune=None if finetune is None else FinetuneSettings.from_mapping(finetune),
    threads=snakemake.threads,
    metric=params.metric,
    lr_curve_path=snakemake.input.get("lr_curve"),
)
