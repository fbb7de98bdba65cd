"""Stage recommend: the answer to "which tasks should I train together?", chosen on the
validation rows no final model was fitted or early-stopped on, with a signal check of the
higher-order affinity."""

from __future__ import annotations

import html
import logging
from pathlib import Path

import pandas as pd

from taskgroup.data.tables import (
    RECOMMENDATION_GROUPS,
    RECOMMENDATION_SIGNAL,
    RECOMMENDATION_VERDICT,
    SUBSET_VALUES,
    TASKS,
    read_table,
    write_atomically,
    write_table,
)
from taskgroup.group.affinity import value_matrix
from taskgroup.group.clustering import ClusteringSettings
from taskgroup.report import recommendation as rec

log = logging.getLogger(__name__)


def recommended_groups(per_task: pd.DataFrame, candidate: str, variant: str,
                       task_names: list[str]) -> pd.DataFrame:
    """The chosen candidate's groups (task, group, group_key), in task order."""
    rows = per_task[(per_task["grouping"] == candidate) & (per_task["variant"] == variant)]
    groups = rows.drop_duplicates("task").set_index("task").loc[task_names]
    return pd.DataFrame({
        "task": task_names,
        "group": groups["cluster"].to_numpy(dtype="int64"),
        "group_key": groups["group_key"].to_numpy(dtype=object),
    })


def recommend(
    per_task_path, values_path, tasks_path, groups_path, verdict_path, signal_path,
    markdown_path, html_path, candidates: list, variant: str,
    settings: rec.RecommendationSettings, method: str, clustering: ClusteringSettings,
    metric: str,
) -> None:
    """Choose among ``candidates`` (clustered groupings, naive_mtl, stl) trained with the
    final-training ``variant`` by the rule of :mod:`taskgroup.report.recommendation`, on the
    per-task table's selection rows (``per_task_path``); check the higher-order affinity's
    split-half reliability on the random design's values (``values_path``), its halves
    clustered with ``method`` under ``clustering``. Writes the chosen groups, the verdict
    table (one row per candidate), the signal check (one row), the verdict in Markdown and
    an HTML copy for the report."""
    tasks = read_table(tasks_path, TASKS)
    names = tasks.sort_values("task_index")["task"].tolist()
    per_task = pd.read_parquet(per_task_path)
    membership, losses = value_matrix(read_table(values_path, SUBSET_VALUES), names)
    signal = rec.split_half_reliability(membership, losses, method, clustering, settings.seed)
    signal["alpha"] = float(settings.reliability_alpha)
    signal["above_noise"] = bool(signal["p_value"] < settings.reliability_alpha)
    allowed = ("clustered", rec.REFERENCE, rec.SINGLE_TASK) if signal["above_noise"] else (
        rec.REFERENCE, rec.SINGLE_TASK)
    comparison = rec.compare_with_reference(
        rec.pooled_selection_losses(per_task, list(candidates), variant)
    )
    verdict = rec.choose_candidate(comparison, settings.margin, allowed)
    verdict = verdict[list(RECOMMENDATION_VERDICT)]
    chosen = verdict.loc[verdict["chosen"], "candidate"].iloc[0]
    text = rec.verdict_markdown(verdict, signal, settings.reliability_alpha, settings.margin,
                                metric)
    log.info("signal check: %s\n%s", signal, text)
    write_table(recommended_groups(per_task, chosen, variant, names)[
        list(RECOMMENDATION_GROUPS)], groups_path)
    write_table(verdict, verdict_path)
    write_table(pd.DataFrame([signal])[list(RECOMMENDATION_SIGNAL)], signal_path)
    write_atomically(markdown_path, lambda partial: Path(partial).write_text(text))
    write_atomically(
        html_path, lambda partial: Path(partial).write_text(f"<pre>{html.escape(text)}</pre>\n")
    )
