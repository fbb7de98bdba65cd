"""The two estimators as valuers, and the projected gradients they start from.

A valuer is a function ``value(subsets) -> subset_values``: it takes a long subsets table
(subset_id (int64), task (str), one row per member; any number of subsets) and returns the
subset_values table of those subsets (see :mod:`taskgroup.data.tables`) without its design
column. The per-chunk stages and forward selection call the same valuers, so a subset gets
the same value whichever of them asks.

The projected gradients travel between stages as the projected table; :func:`project_data`
computes them, :func:`projected_table` and :func:`splits_from_table` convert them to and
from the table.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from taskgroup.data.examples import TaskData
from taskgroup.data.tables import Z_PREFIX
from taskgroup.estimate.finetune import FinetuneSettings, finetune_values
from taskgroup.estimate.linearized import ProjectedSplit, estimate_values
from taskgroup.estimate.projection import Projector, project_examples
from taskgroup.estimate.settings import GradientEstimateSettings
from taskgroup.models.network import MultiHeadNet

Valuer = Callable[[pd.DataFrame], pd.DataFrame]
SPLITS = ("train", "val")


def project_data(
    model: MultiHeadNet, projector: Projector, data: TaskData, batch_size: int
) -> dict[str, ProjectedSplit]:
    """The projected gradients and outputs of every training and validation example of
    ``data`` at ``model``'s parameters, one :class:`ProjectedSplit` per split (train, val),
    projected ``batch_size`` examples at a time (see
    :func:`taskgroup.estimate.projection.project_examples`). A projector that needs fitting
    ("eigen", preconditioner "adam") is fitted on the training examples first, in the pass
    that projects them."""
    splits = {}
    for split in SPLITS:
        tensors = data.splits[split]
        if split == "train" and projector.needs_fit:
            z, outputs = projector.fit(model, tensors, batch_size)
        else:
            z, outputs = project_examples(
                model, projector, tensors.features, tensors.task_index, batch_size
            )
        splits[split] = ProjectedSplit(
            z, outputs, tensors.labels, tensors.task_index, tensors.regression
        )
    return splits


def projected_table(splits: dict[str, ProjectedSplit], task_names: list[str]) -> pd.DataFrame:
    """The projected table (schema projected) of ``splits``: task, split, label,
    base_output, then one float32 column z_<i> per projected dimension; train rows first."""
    frames = []
    for split in SPLITS:
        projected = splits[split]
        frame = pd.DataFrame(
            projected.z.cpu().numpy().astype(np.float32),
            columns=[f"{Z_PREFIX}{i:04d}" for i in range(projected.z.shape[1])],
        )
        frame.insert(0, "base_output", projected.base.cpu().numpy().astype(np.float32))
        frame.insert(0, "label", projected.labels.cpu().numpy())
        frame.insert(0, "split", split)
        frame.insert(
            0, "task",
            np.asarray(task_names, dtype=object)[projected.task_index.cpu().numpy()],
        )
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def splits_from_table(
    table: pd.DataFrame, task_names: list[str], device, task_types: list[str] | None = None,
    source: str = "projected table",
) -> dict[str, ProjectedSplit]:
    """The projected table as one :class:`ProjectedSplit` per split (train, val) on
    ``device``, task indices in ``task_names`` order, with the regression mask from
    ``task_types`` (None = all binary). Raises ValueError naming ``source`` when the table
    holds a task that is not in ``task_names``."""
    columns = [c for c in table.columns if c.startswith(Z_PREFIX)]
    index_of = {name: i for i, name in enumerate(task_names)}
    unknown = sorted(set(table["task"]) - set(index_of))
    if unknown:
        raise ValueError(f"{source}: tasks {unknown[:5]} are not in the tasks table")
    regression = {
        name: kind == "regression"
        for name, kind in zip(task_names, task_types or ["binary"] * len(task_names))
    }
    splits = {}
    for split in SPLITS:
        rows = table[table["split"] == split]
        splits[split] = ProjectedSplit(
            z=torch.from_numpy(rows[columns].to_numpy(np.float32).copy()).to(device),
            base=torch.from_numpy(rows["base_output"].to_numpy(np.float32).copy()).to(device),
            labels=torch.from_numpy(rows["label"].to_numpy(np.float32).copy()).to(device),
            task_index=torch.from_numpy(
                rows["task"].map(index_of).to_numpy(np.int64).copy()
            ).to(device),
            regression=torch.from_numpy(
                rows["task"].map(regression).to_numpy(bool).copy()
            ).to(device),
        )
    return splits


def gradient_valuer(
    splits: dict[str, ProjectedSplit],
    projector: Projector,
    theta_norm: float,
    task_names: list[str],
    task_types: list[str],
    settings: GradientEstimateSettings,
    metric: str,
    memory_mb: float = 512.0,
    task_scales: pd.DataFrame | None = None,
) -> Valuer:
    """The estimator "gradient" as a valuer: the linearized estimate
    (:func:`taskgroup.estimate.linearized.estimate_values`) from the projected ``splits``
    (train, val) with ``settings``; ``projector`` (the one that projected them) and
    ``theta_norm`` (||theta*|| of the meta-initialization in the projector's metric,
    ``projector.parameter_norm``) give each subset's relative shift.
    ``metric``: evaluation.metric. ``memory_mb``: the memory of a batch of subsets' Hessians
    (see :func:`taskgroup.estimate.linearized.subsets_per_batch`). ``task_scales``: each
    task's scale and offset of its estimated changes (a task scales table, see
    :mod:`taskgroup.estimate.task_scales`; None: uncalibrated). step_scale "auto" is
    resolved for ``projector`` (:meth:`GradientEstimateSettings.for_projection`). Raises
    ValueError when
    ``settings.l2`` is still "auto" (choose it first, see
    :func:`taskgroup.stages.validate.calibrate_estimate`), or task_scales is "auto" and no
    ``task_scales`` are given."""
    if settings.l2_is_auto:
        raise ValueError(
            'gradient_estimate.l2 is "auto" but no l2 was chosen: pass the settings '
            "with_l2(<the l2 curve's chosen l2>)"
        )
    if settings.scales_tasks and task_scales is None:
        raise ValueError(
            'gradient_estimate.task_scales is "auto" but no task scales were given: pass '
            'them, or settings with task_scales "none" for unscaled values'
        )
    settings = settings.for_projection(projector.exact)

    def value(subsets: pd.DataFrame) -> pd.DataFrame:
        return estimate_values(
            splits["train"], splits["val"], subsets, task_names, settings,
            shift_norm=projector.shift_norms, theta_norm=theta_norm, metric=metric,
            task_types=task_types, memory_mb=memory_mb, task_scales=task_scales,
        )

    return value


def finetune_valuer(
    meta_model: MultiHeadNet, data: TaskData, settings: FinetuneSettings, metric: str
) -> Valuer:
    """The estimator "finetune" as a valuer: fine-tune a copy of ``meta_model`` on each
    subset with ``settings`` (each subset's seed derived from (settings.seed, subset_id), see
    :func:`taskgroup.estimate.finetune.finetune_values`). ``metric``: evaluation.metric."""

    def value(subsets: pd.DataFrame) -> pd.DataFrame:
        return finetune_values(meta_model, data, subsets, settings, metric=metric)

    return value
