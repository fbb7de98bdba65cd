"""Validation rows held out of early stopping: the rows that select among trained candidates.

A group model that keeps its best epoch on the validation rows has seen those rows; a
grouping with many small models is then favoured when it is judged on them. So every task's
validation rows are cut once, seeded and independently of the model that will see them, into
a stopping part (best-epoch selection) and a selection part (read only by the
recommendation, :mod:`taskgroup.report.recommendation`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from taskgroup.data.datasets.splits import stratified_split
from taskgroup.data.examples import SplitTensors, TaskData
from taskgroup.seeding import derived_seed

# The name of the selection part in TaskData.splits and in the group results tables; the
# stopping part stays under "val", the split every early-stopping routine reads.
SELECTION_SPLIT = "val_select"


@dataclass(frozen=True)
class SelectionSplit:
    """How the validation rows are cut (config section ``recommendation``): ``fraction`` of
    each task's validation rows (per label class for binary tasks) go to the selection part,
    the others to the stopping part; ``seed`` seeds the cut."""

    fraction: float
    seed: int


def selection_mask(
    task_names: list[str], task_types: list[str], split: SplitTensors, settings: SelectionSplit
) -> np.ndarray:
    """(n,) bool over the rows of ``split``: True = selection part, False = stopping part.

    Each task's rows are cut with their own generator, seeded by (settings.seed, task name),
    so a task's cut depends only on its own rows (their order and labels), never on which
    other tasks a model trains with. Binary tasks are cut within each label class
    (:func:`taskgroup.data.datasets.splits.stratified_split`); a class or a regression task
    of m rows gives m - round((1 - fraction) * m) rows to the selection part (Python's round:
    halves to even), so a task with a single validation row has it in the selection part only.
    """
    if not 0.0 < settings.fraction < 1.0:
        raise ValueError(
            f"recommendation.selection_fraction is {settings.fraction}; expected a value "
            "strictly between 0 and 1"
        )
    task_index = split.task_index.cpu().numpy()
    labels = split.labels.cpu().numpy()
    selected = np.zeros(len(task_index), dtype=bool)
    for index, (name, kind) in enumerate(zip(task_names, task_types)):
        rows = np.flatnonzero(task_index == index)
        if len(rows) == 0:
            continue
        strata = labels[rows] if kind == "binary" else np.zeros(len(rows))
        rng = np.random.default_rng(derived_seed(settings.seed, "selection split", name))
        # stratified_split's "train" share is the stopping part; with no "val" share the
        # remainder ("test") is the selection part.
        parts = stratified_split(strata, 1.0 - settings.fraction, 0.0, rng)
        selected[rows] = parts == "test"
    return selected


def _rows(split: SplitTensors, keep: np.ndarray) -> SplitTensors:
    mask = torch.from_numpy(keep).to(split.task_index.device)
    return SplitTensors(
        split.features[mask], split.labels[mask], split.task_index[mask],
        None if split.regression is None else split.regression[mask],
    )


def hold_out_selection_rows(data: TaskData, settings: SelectionSplit) -> TaskData:
    """``data`` with its "val" split cut by :func:`selection_mask`: "val" holds the stopping
    part (so early stopping, the alignment phase and the diagnostics read only it) and
    :data:`SELECTION_SPLIT` the selection part; train and test are unchanged. The rows keep
    their order within each part."""
    validation = data.splits["val"]
    selected = selection_mask(data.task_names, data.types, validation, settings)
    splits = dict(data.splits)
    splits["val"] = _rows(validation, ~selected)
    splits[SELECTION_SPLIT] = _rows(validation, selected)
    return TaskData(data.task_names, splits, data.task_types)
