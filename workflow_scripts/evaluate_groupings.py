from taskgroup.logs import log_to_file
from taskgroup.stages.evaluate import evaluate_groupings

log_to_file(snakemake.log[0])
evaluate_groupings(
    grouping_paths={name: snakemake.input[name] for name in snakemake.params.groupings},
    result_paths=list(snakemake.input.results),
    tasks_path=snakemake.input.tasks,
    per_task_path=snakemake.output.per_task,
    summary_path=snakemake.output.summary,
    summary_html_path=snakemake.output.summary_html,
    variants_path=snakemake.output.get("variants"),
    variant_changes_path=snakemake.output.get("variant_changes"),
    variants_html_path=snakemake.output.get("variants_html"),
    decisions={
        "dataset": snakemake.input.decisions,
        "subsets": snakemake.input.subsets,
        "estimator": snakemake.params.estimator,
        "table": snakemake.output.decisions,
        "html": snakemake.output.decisions_html,
    },
)
