from taskgroup.group.clustering import ClusteringSettings
from taskgroup.logs import log_to_file
from taskgroup.report.recommendation import RecommendationSettings
from taskgroup.stages.recommend import recommend

log_to_file(snakemake.log[0])
recommend(
    per_task_path=snakemake.input.per_task,
    values_path=snakemake.input.values,
    tasks_path=snakemake.input.tasks,
    groups_path=snakemake.output.groups,
    verdict_path=snakemake.output.verdict,
    signal_path=snakemake.output.signal,
    choice_path=snakemake.output.choice,
    markdown_path=snakemake.output.markdown,
    html_path=snakemake.output.html,
    candidates=snakemake.params.candidates,
    variant=snakemake.params.variant,
    settings=RecommendationSettings(**snakemake.params.settings),
    method=snakemake.params.method,
    clustering=ClusteringSettings(**snakemake.params.clustering),
    auto_folds=snakemake.params.auto_folds,
    metric=snakemake.params.metric,
    validation_path=snakemake.input.validation or None,
)
