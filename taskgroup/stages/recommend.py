"""Stage recommend: the answer to "which tasks should I train together?", chosen on the
validation rows no final model was fitted or early-stopped on, with a signal check of the
higher-order affinity."""

from __future__ import annotations

import html
import logging
from pathlib import Path

import pandas as pd

from taskgroup.data.tables import (
    PER_TASK,
    RECOMMENDATION_GROUPS,
    RECOMMENDATION_PER_TASK_CHOICE,
    RECOMMENDATION_SIGNAL,
    RECOMMENDATION_VERDICT,
    SUBSET_VALUES,
    TASKS,
    VALIDATION_PER_SUBSET,
    read_table,
    write_atomically,
    write_table,
)
from taskgroup.data.task_types import resolve_metrics
from taskgroup.group.affinity import value_matrix
from taskgroup.group.clustering import ClusteringSettings
from taskgroup.report import recommendation as rec

log = logging.getLogger(__name__)


def recommend(
    per_task_path, values_path, tasks_path, groups_path, verdict_path, signal_path,
    choice_path, markdown_path, html_path, candidates: list, variant: str,
    settings: rec.RecommendationSettings, method: str, clustering: ClusteringSettings,
    auto_folds: int, metric: str, validation_path=None,
) -> None:
    """Choose among ``candidates`` (clustered groupings, naive_mtl, stl) trained with the
    final-training ``variant`` by the rule of :mod:`taskgroup.report.recommendation`, on the
    per-task table's selection rows (``per_task_path``) by the selection statistic of
    ``settings`` (resolved against each task's ``metric``, evaluation.metric), after its
    signal check
    (:func:`taskgroup.report.recommendation.signal_check`) of the random design's values
    (``values_path``) clustered with ``method`` under ``clustering`` (``auto_folds``: the
    cross-fit folds of its held-out partition check and of an "auto" count) and of the
    estimator validation's per-subset table (``validation_path``, None when it did not
    run). Writes the chosen groups, the verdict
    table (one row per candidate), the signal check (one row), the per-task choice
    (:func:`taskgroup.report.recommendation.per_task_choice`, reported only), the verdict in
    Markdown and an HTML copy for the report."""
    tasks = read_table(tasks_path, TASKS).sort_values("task_index")
    names = tasks["task"].tolist()
    # resolved before the signal check's minutes of clustering at large k
    statistic = rec.selection_statistic(
        settings.statistic, resolve_metrics(metric, tasks["task_type"].tolist(), names)
    )
    per_task = read_table(per_task_path, PER_TASK)
    membership, losses = value_matrix(read_table(values_path, SUBSET_VALUES), names)
    per_subset = (None if validation_path is None
                  else read_table(validation_path, VALIDATION_PER_SUBSET))
    signal = rec.signal_check(membership, losses, method, clustering, auto_folds, settings,
                              per_subset)
    verdict, groups = rec.recommendation(per_task, list(candidates), variant, names,
                                         statistic, settings.margin, settings.task_alpha,
                                         signal["above_noise"])
    verdict = verdict[list(RECOMMENDATION_VERDICT)]
    choice = rec.per_task_choice(per_task, verdict, variant, statistic)
    text = rec.verdict_markdown(verdict, signal, settings.reliability_alpha, settings.margin,
                                settings.task_alpha, metric, choice)
    log.info("signal check: %s\n%s", signal, text)
    write_table(groups[list(RECOMMENDATION_GROUPS)], groups_path)
    write_table(verdict, verdict_path)
    write_table(choice[list(RECOMMENDATION_PER_TASK_CHOICE)], choice_path)
    write_table(pd.DataFrame([signal])[list(RECOMMENDATION_SIGNAL)], signal_path)
    write_atomically(markdown_path, lambda partial: Path(partial).write_text(text))
    write_atomically(
        html_path, lambda partial: Path(partial).write_text(f"<pre>{html.escape(text)}</pre>\n")
    )
