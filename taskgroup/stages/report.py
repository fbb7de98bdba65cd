"""Stages that compare the groupings: summary tables and figures."""

from __future__ import annotations

import logging

import pandas as pd

from taskgroup import affinity as affinity_lib
from taskgroup import plots
from taskgroup.evaluation import per_task_table, summary_table
from taskgroup.tables import (
    AFFINITY,
    GROUP_RESULTS,
    GROUPING,
    TASKS,
    read_table,
    write_atomically,
    write_table,
)

log = logging.getLogger(__name__)


def evaluate_groupings(
    grouping_paths: dict, result_paths: list, tasks_path, per_task_path, summary_path,
    summary_html_path,
) -> None:
    """The per-task and summary comparison tables of every grouping (and an HTML copy of the
    summary for the report)."""
    tasks = read_table(tasks_path, TASKS)
    loaded = {name: read_table(path, GROUPING) for name, path in grouping_paths.items()}
    results = pd.concat([read_table(path, GROUP_RESULTS) for path in result_paths])
    per_task = per_task_table(loaded, results)
    summary = summary_table(per_task, loaded, tasks)
    log.info(
        "%d groupings, %d distinct group models; summary:\n%s",
        len(loaded), len(result_paths), summary.to_string(index=False),
    )
    write_table(per_task, per_task_path)
    write_table(summary, summary_path)
    write_atomically(
        summary_html_path,
        lambda partial: summary.to_html(partial, index=False, float_format="%.4f"),
    )


def plot_figures(
    affinity_path, clusters_path, per_task_path, tasks_path, heatmap_path, gain_path,
    primary: str,
) -> None:
    """The primary affinity heatmap ordered by its clusters, and the per-task gain of every
    grouping over naive MTL."""
    tasks = read_table(tasks_path, TASKS)
    names = tasks.sort_values("task_index")["task"].tolist()
    table = read_table(affinity_path, AFFINITY)
    source, method = primary.split("-", 1)
    plots.affinity_heatmap(
        affinity_lib.square(table, names, "normalized"),
        names,
        read_table(clusters_path, GROUPING).set_index("task").loc[names, "group"].to_numpy(),
        heatmap_path,
        title=f"Normalized {source} affinity, ordered by {method} clusters",
    )
    per_task = pd.read_parquet(per_task_path)
    if "naive_mtl" in set(per_task["grouping"]):
        plots.gain_over_reference(per_task, gain_path)
    else:
        plots.gain_over_reference(per_task, gain_path, reference=per_task["grouping"].iloc[0])
