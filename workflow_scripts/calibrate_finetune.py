from taskgroup.estimate.finetune import FinetuneSettings
from taskgroup.logs import log_to_file
from taskgroup.stages.validate import calibrate_finetune

log_to_file(snakemake.log[0])
params = snakemake.params
calibrate_finetune(
    examples_path=snakemake.input.examples,
    tasks_path=snakemake.input.tasks,
    model_path=snakemake.input.model,
    subsets_path=snakemake.input.subsets,
    lr_curve_path=snakemake.output[0],
    n_subsets=params.held_out["n_subsets"],
    seed=params.held_out["seed"],
    finetune=FinetuneSettings.from_mapping(params.finetune),
    threads=snakemake.threads,
    metric=params.metric,
)
