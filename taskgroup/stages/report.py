"""Stages that compare the groupings: summary tables and figures."""

from __future__ import annotations

import logging

import pandas as pd

from taskgroup import affinity as affinity_lib
from taskgroup.evaluation import per_task_table, summary_table
from taskgroup.tables import AFFINITY, GROUP_RESULTS, GROUPING, TASKS, read_table, write_table

log = logging.getLogger(__name__)


def evaluate_groupings(
    grouping_paths: dict, result_paths: list, tasks_path, per_task_path, summary_path
) -> None:
    """The per-task and summary comparison tables of every grouping."""
    tasks = read_table(tasks_path, TASKS)
    loaded = {name: read_table(path, GROUPING) for name, path in grouping_paths.items()}
    per_task = per_task_table([read_table(path, GROUP_RESULTS) for path in result_paths])
    summary = summary_table(per_task, loaded, tasks)
    log.info("summary:\n%s", summary.to_string(index=False))
    write_table(per_task, per_task_path)
    write_table(summary, summary_path)


def plot_figures(
    affinity_path, clusters_path, per_task_path, tasks_path, heatmap_path,
    per_task_figure_path,
) -> None:
    """The affinity heatmap ordered by cluster and the per-task metric of each grouping."""
    from taskgroup import plots

    tasks = read_table(tasks_path, TASKS)
    names = tasks.sort_values("task_index")["task"].tolist()
    table = read_table(affinity_path, AFFINITY)
    plots.affinity_heatmap(
        affinity_lib.square(table, names, "normalized"),
        names,
        read_table(clusters_path, GROUPING).set_index("task").loc[names, "group"].to_numpy(),
        heatmap_path,
    )
    plots.per_task_metric(pd.read_parquet(per_task_path), per_task_figure_path)
