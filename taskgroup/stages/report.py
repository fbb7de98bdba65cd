"""Stages that compare the groupings: summary tables and figures."""

from __future__ import annotations

import logging

import pandas as pd

from taskgroup.data.tables import (
    AFFINITY,
    GROUP_RESULTS,
    GROUPING,
    TASKS,
    read_table,
    write_atomically,
    write_table,
)
from taskgroup.group import affinity as affinity_lib
from taskgroup.report import plots
from taskgroup.report.evaluation import (
    per_task_table,
    summary_table,
    variant_comparison,
    variant_task_changes,
)

log = logging.getLogger(__name__)


def _write_html(table: pd.DataFrame, path) -> None:
    write_atomically(
        path, lambda partial: table.to_html(partial, index=False, float_format="%.4f")
    )


def evaluate_groupings(
    grouping_paths: dict, result_paths: list, tasks_path, per_task_path, summary_path,
    summary_html_path, variants_path=None, variant_changes_path=None,
    variants_html_path=None,
) -> None:
    """The per-task and summary comparison tables of every grouping and final-training
    variant (and an HTML copy of the summary for the report). With ``variants_path``, also
    the comparison of each variant with plain training, per grouping (and its HTML copy)
    and per task (``variant_changes_path``)."""
    tasks = read_table(tasks_path, TASKS)
    loaded = {name: read_table(path, GROUPING) for name, path in grouping_paths.items()}
    results = pd.concat([read_table(path, GROUP_RESULTS) for path in result_paths])
    per_task = per_task_table(loaded, results)
    summary = summary_table(per_task, loaded, tasks)
    log.info(
        "%d groupings, %d group models (groups x variants); summary:\n%s",
        len(loaded), len(result_paths), summary.to_string(index=False),
    )
    write_table(per_task, per_task_path)
    write_table(summary, summary_path)
    _write_html(summary, summary_html_path)
    if variants_path is not None:
        if "plain" not in set(per_task["variant"]):
            raise ValueError(
                "the variant comparison needs 'plain' in training_options.final.variants"
            )
        comparison = variant_comparison(per_task)
        log.info("variants against plain training:\n%s", comparison.to_string(index=False))
        write_table(comparison, variants_path)
        write_table(variant_task_changes(per_task), variant_changes_path)
        _write_html(comparison, variants_html_path)


def plot_figures(
    affinity_path, clusters_path, per_task_path, tasks_path, heatmap_path, gain_path,
    primary: str, variant: str = "plain",
) -> None:
    """The primary affinity heatmap ordered by its clusters, and the per-task gain of every
    grouping over naive MTL (final-training ``variant``)."""
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
    per_task = per_task[per_task["variant"] == variant]
    if "naive_mtl" in set(per_task["grouping"]):
        plots.gain_over_reference(per_task, gain_path)
    else:
        plots.gain_over_reference(per_task, gain_path, reference=per_task["grouping"].iloc[0])


def plot_variants(changes_path, clusters_path, figure_path, primary: str) -> None:
    """Per-task change of each final-training variant over plain training, for the
    ``primary`` grouping (tasks ordered by its clusters), with the tasks' loss weights."""
    changes = pd.read_parquet(changes_path)
    clusters = read_table(clusters_path, GROUPING)
    plots.variant_changes(changes[changes["grouping"] == primary], clusters, figure_path,
                          title=f"Variants against plain training, grouping {primary}")

