from taskgroup.estimate.finetune import FinetuneSettings
from taskgroup.logs import log_to_file
from taskgroup.stages.finetune import finetune_subsets

log_to_file(snakemake.log[0])
finetune_subsets(
    examples_path=snakemake.input.examples,
    tasks_path=snakemake.input.tasks,
    model_path=snakemake.input.model,
    subsets_path=snakemake.input.subsets,
    output_path=snakemake.output[0],
    chunk=int(snakemake.wildcards.chunk),
    chunk_size=snakemake.params.chunk_size,
    settings=FinetuneSettings.from_mapping(snakemake.params.finetune),
    threads=snakemake.threads,
    metric=snakemake.params.metric,
    lr_curve_path=snakemake.input.get("lr_curve"),
)
