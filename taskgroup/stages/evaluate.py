"""Stages that compare the groupings: evaluate_groupings (summary tables), plot_figures,
plot_variants, and diagnose_transfer (generalization gaps of the final models)."""

from __future__ import annotations

import logging

import pandas as pd

from taskgroup.data.tables import (
    AFFINITY,
    GENERALIZATION_GAP,
    GROUP_DIAGNOSTICS,
    GROUP_RESULTS,
    GROUPING,
    RUN_DECISIONS,
    SUBSETS,
    TASKS,
    read_table,
    write_atomically,
    write_table,
)
from taskgroup.group import affinity as affinity_lib
from taskgroup.group.groupings import group_keys
from taskgroup.report import plots
from taskgroup.report.evaluation import (
    diverged_models,
    per_task_table,
    run_decisions,
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
    variants_html_path=None, decisions: dict | None = None,
) -> None:
    """The per-task and summary comparison tables of every grouping and final-training
    variant (and an HTML copy of the summary for the report); a warning names the
    groupings with group models whose training loss ended far above its start. With
    ``variants_path``, also the comparison of each variant with plain training, per
    grouping (and its HTML copy) and per task (``variant_changes_path``). With
    ``decisions`` ({dataset, subsets: input paths of the preparation's run_decisions table
    and the random design; estimator: the configured one; table, html: output paths}),
    also the run_decisions table of the report (:func:`taskgroup.report.evaluation.run_decisions`)
    and its HTML copy."""
    tasks = read_table(tasks_path, TASKS)
    loaded = {name: read_table(path, GROUPING) for name, path in grouping_paths.items()}
    results = pd.concat([read_table(path, GROUP_RESULTS) for path in result_paths])
    per_task = per_task_table(loaded, results)
    diverged = diverged_models(results)
    summary = summary_table(per_task, loaded, tasks, diverged=diverged)
    if diverged:
        flagged = summary[summary["n_diverged"] > 0]
        log.warning(
            "%d group model training(s) ended with a training loss far above its start "
            "(the diverged column of results/<name>/final/; lower final.lr): their "
            "groupings' rows in the summary (n_diverged > 0) compare models that may not "
            "have trained: %s",
            len(diverged), ", ".join(
                f"{row.grouping} ({row.variant}, {row.n_diverged})"
                for row in flagged.itertuples()
            ),
        )
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
    if decisions is not None:
        decided = run_decisions(
            read_table(decisions["dataset"], RUN_DECISIONS),
            read_table(decisions["subsets"], SUBSETS),
            decisions["estimator"],
        )
        write_table(decided, decisions["table"])
        _write_html(decided, decisions["html"])


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


def _diagnostics_by_group(paths: list) -> dict:
    """(variant, group_key) -> the group model's diagnostics table (every seed)."""
    tables = {}
    for path in paths:
        table = read_table(path, GROUP_DIAGNOSTICS)
        for key, rows in table.groupby(["variant", "group_key"], sort=False):
            tables[key] = rows.reset_index(drop=True)
    return tables


def generalization_gaps(diagnostics: dict) -> pd.DataFrame:
    """The generalization gap (:func:`taskgroup.models.diagnostics.generalization_gap`) of every
    task of every multi-task group model against the single-task model of the same task
    and variant, paired by seed. ``diagnostics``: (variant, group_key) -> table.

    Schema generalization_gap (:mod:`taskgroup.data.tables`). A task whose single-task model
    was not trained (no stl baseline) has no row."""
    # torch, through the diagnostics module: only diagnose_transfer needs it.
    from taskgroup.models.diagnostics import generalization_gap

    single = {}
    for (variant, _), table in diagnostics.items():
        if table["task"].nunique() == 1:
            single[(variant, table["task"].iloc[0])] = table
    frames = []
    for (variant, key), table in sorted(diagnostics.items()):
        members = sorted(table["task"].unique())
        runs = [single[(variant, task)] for task in members if (variant, task) in single]
        if len(members) < 2 or not runs:
            continue
        gap = generalization_gap(table, pd.concat(runs, ignore_index=True))
        gap.insert(0, "n_tasks", len(members))
        gap.insert(0, "group_key", key)
        gap.insert(0, "variant", variant)
        frames.append(gap)
    if not frames:
        return pd.DataFrame(columns=list(GENERALIZATION_GAP))
    return pd.concat(frames, ignore_index=True)[list(GENERALIZATION_GAP)]


def diagnose_transfer(
    grouping_paths: dict, diagnostics_paths: list, gap_path, figure_path, primary: str,
    variant: str,
) -> None:
    """The generalization gap of every task of every multi-task group model against its
    single-task model (``gap_path``), and a figure: the transfer diagnostics of the naive
    MTL model (or the primary grouping's largest group), its tasks colored by their primary
    cluster, and the gap per task for the primary grouping and naive MTL, for the
    final-training ``variant``."""
    diagnostics = _diagnostics_by_group(diagnostics_paths)
    gaps = generalization_gaps(diagnostics)
    n_multi = sum(table["task"].nunique() > 1 for table in diagnostics.values())
    log.info(
        "%d group models with diagnostics (%d multi-task); generalization gaps for %d "
        "(group, task, seed) rows; mean gap by variant:\n%s",
        len(diagnostics), n_multi, len(gaps),
        gaps.groupby("variant")["gap"].describe().to_string() if len(gaps) else "none",
    )
    if len(gaps) == 0:
        log.warning("no single-task models were trained (add stl to evaluation.baselines): "
                    "the generalization gap table is empty")
    write_table(gaps, gap_path)
    keyed = {
        name: group_keys(read_table(path, GROUPING))
        for name, path in grouping_paths.items()
        if name in (primary, "naive_mtl")
    }
    shown = "naive_mtl" if "naive_mtl" in keyed else primary
    sizes = keyed[shown]["group_key"].value_counts()
    trajectory = diagnostics[(variant, sizes.index[0])]
    chosen = gaps[gaps["variant"] == variant] if len(gaps) else gaps
    per_grouping = {
        name: chosen[chosen["group_key"].isin(set(table["group_key"]))]
        for name, table in keyed.items()
    }
    plots.generalization_diagnostics(
        trajectory, per_grouping, figure_path,
        title=f"{shown} model ({variant}, {trajectory['task'].nunique()} tasks)",
        groups=keyed[primary].set_index("task")["group"].to_dict(),
    )
