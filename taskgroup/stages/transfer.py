"""Stage of the transfer diagnostics of the final models: the generalization gap of each
task of a multi-task group model against its single-task model, and its figure."""

from __future__ import annotations

import logging

import pandas as pd

from taskgroup.data.tables import (
    DIAGNOSTICS,
    GENERALIZATION_GAP,
    GROUPING,
    read_table,
    write_table,
)
from taskgroup.group.groupings import group_keys
from taskgroup.models.diagnostics import generalization_gap
from taskgroup.report import plots

log = logging.getLogger(__name__)


def _diagnostics_by_group(paths: list) -> dict:
    """(variant, group_key) -> the group model's diagnostics table (every seed)."""
    tables = {}
    for path in paths:
        table = read_table(path, {**DIAGNOSTICS, "variant": "str", "group_key": "str",
                                   "seed": "int"})
        first = table.iloc[0]
        tables[(first["variant"], first["group_key"])] = table
    return tables


def generalization_gaps(diagnostics: dict) -> pd.DataFrame:
    """The generalization gap (:func:`taskgroup.models.diagnostics.generalization_gap`) of every
    task of every multi-task group model against the single-task model of the same task
    and variant, paired by seed. ``diagnostics``: (variant, group_key) -> table.

    Schema generalization_gap (:mod:`taskgroup.data.tables`). A task whose single-task model
    was not trained (no stl baseline) has no row."""
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
