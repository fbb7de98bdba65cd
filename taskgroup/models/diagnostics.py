"""Transfer diagnostics of a multi-head training run (after Mueller et al., TMLR 2024, "Can
optimization trajectories explain multi-task transfer?").

Recorded for the trained tasks S at epoch 0 (initialization), every ``every`` epochs and at
the last epoch of each phase, then once more for the kept model:

- loss: the task's mean loss over all its examples of the split ("train" or "val"),
  unweighted, computed with the parameters at the end of the epoch (not the running mean
  of the minibatch losses);
- grad_cosine: for the split s, let L_i^s be that mean loss of task i and g_i^s the gradient
  of L_i^s with respect to every parameter of the shared trunk (weights and biases of all its
  layers, flattened and concatenated; heads and alignment matrices excluded). The summed
  multitask gradient is G^s = sum_{j in S} g_j^s (the uniform multi-task gradient of the
  TMLR paper, up to its 1/|S| factor, which a cosine ignores). grad_cosine = <g_i^s, G^s> /
  (||g_i^s|| ||G^s||), NaN when either norm is 0 (1 for a single task);
- grad_norm: ||g_i^s||.

Table (one row per recorded epoch, phase, task and split): epoch (int64: epochs completed;
the alignment phase continues the count after the joint epochs), phase ("joint" = trunk
and heads trained together, "alignment" = phase 2 of covariance alignment, "final" = the
kept model, at the epoch it comes from), task, split, loss, grad_cosine, grad_norm (float64).
The stages add seed (and group_key) columns.

Generalization gap at matched training loss (:func:`generalization_gap`): for task i, let
L_MTL be its training loss in the multitask run's "final" row and V_MTL its validation loss
there. Among the single-task run's recorded trajectory points (phases "joint" and
"alignment"), the matched epoch e* is the one whose training loss of task i is closest to
L_MTL (absolute difference; ties go to the earliest epoch). The gap is V_MTL - V_STL(e*):
positive = the multitask model generalizes worse than the single-task run did at the same
training loss (negative transfer beyond what the training loss explains).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from taskgroup.data.examples import SplitTensors, TaskData
from taskgroup.data.tables import DIAGNOSTICS
from taskgroup.models.metrics import example_losses
from taskgroup.models.training import per_task_losses

SPLITS = ("train", "val")


def trunk_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the shared trunk (a MultiHeadNet's or an AlignedNet's)."""
    return list(model.trunk.parameters())


def gradient_cosines(
    model: nn.Module, split: SplitTensors, task_indices: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per task of ``task_indices`` (in that order): mean loss, grad_cosine and grad_norm on
    ``split`` (definitions in the module docstring). NaN for a task without examples."""
    params = trunk_parameters(model)
    chosen = task_indices.tolist()
    n = len(chosen)
    losses, cosines, norms = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    outputs = model(split.features, split.task_index)
    per_example = example_losses(outputs, split.labels, split.regression)
    grads = []
    for position, task in enumerate(chosen):
        rows = split.task_index == task
        if not bool(rows.any()):
            grads.append(None)
            continue
        loss = per_example[rows].mean()
        losses[position] = float(loss.detach())
        if params:
            flat = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            flat = [torch.zeros_like(p) if g is None else g for p, g in zip(params, flat)]
            grads.append(torch.cat([g.reshape(-1) for g in flat]).double())
        else:
            grads.append(None)
    present = [g for g in grads if g is not None]
    if not present:
        return losses, cosines, norms
    total = torch.stack(present).sum(dim=0)
    total_norm = float(total.norm())
    for position, grad in enumerate(grads):
        if grad is None:
            continue
        norms[position] = float(grad.norm())
        if norms[position] > 0 and total_norm > 0:
            cosines[position] = float(grad @ total) / (norms[position] * total_norm)
    return losses, cosines, norms


def diagnostics_rows(
    model: nn.Module, data: TaskData, task_indices: torch.Tensor, epoch: int, phase: str,
    splits=SPLITS,
) -> list[dict]:
    """The diagnostics rows of one recorded state (no parameter or random-state change)."""
    was_training = model.training
    model.eval()
    rows = []
    for split in splits:
        tensors = data.splits[split].select_tasks(task_indices)
        losses, cosines, norms = gradient_cosines(model, tensors, task_indices)
        for position, task in enumerate(task_indices.tolist()):
            rows.append(
                {
                    "epoch": int(epoch), "phase": phase, "task": data.task_names[task],
                    "split": split, "loss": losses[position],
                    "grad_cosine": cosines[position], "grad_norm": norms[position],
                }
            )
    model.train(was_training)
    return rows


class DiagnosticsRecorder:
    """Collects diagnostics during a run: pass :meth:`joint` as ``fit``'s ``after_epoch`` and
    :meth:`alignment` as :func:`taskgroup.models.alignment.train_alignment`'s; call
    :meth:`record_start` before training and :meth:`record_final` on the kept model.

    With ``select_best_epoch`` it also tracks which joint epoch fit keeps (the same mean
    validation loss over the trained tasks, the same strict improvement), to label the
    "final" row with its epoch."""

    def __init__(
        self, data: TaskData, task_indices: torch.Tensor, every: int, joint_epochs: int,
        alignment_epochs: int = 0, select_best_epoch: bool = False,
    ):
        if every < 1:
            raise ValueError(f"diagnostics every must be at least 1, got {every}")
        self.data, self.task_indices, self.every = data, task_indices, int(every)
        self.joint_epochs, self.alignment_epochs = int(joint_epochs), int(alignment_epochs)
        self.select_best_epoch = select_best_epoch
        self.best_joint_epoch, self._best_loss = joint_epochs, math.inf
        self.rows: list[dict] = []

    def _due(self, epoch: int, last: int) -> bool:
        return epoch % self.every == 0 or epoch == last

    def record_start(self, model: nn.Module) -> None:
        self.rows += diagnostics_rows(model, self.data, self.task_indices, 0, "joint")

    def joint(self, epoch: int, model: nn.Module) -> None:
        if self._due(epoch, self.joint_epochs):
            self.rows += diagnostics_rows(model, self.data, self.task_indices, epoch, "joint")
        if self.select_best_epoch:
            with torch.no_grad():
                val = self.data.splits["val"].select_tasks(self.task_indices)
                loss, counts, _ = per_task_losses(model, val, self.data.n_tasks)
            score = float(loss[counts > 0].mean())
            if score < self._best_loss:
                self._best_loss, self.best_joint_epoch = score, epoch

    def alignment(self, epoch: int, model: nn.Module) -> None:
        if self._due(epoch, self.alignment_epochs):
            self.rows += diagnostics_rows(
                model, self.data, self.task_indices, self.joint_epochs + epoch, "alignment"
            )

    def record_final(self, model: nn.Module, alignment_epoch: int = 0) -> None:
        """The kept model; ``alignment_epoch`` = the kept epoch of the alignment phase (0 =
        none or its start, i.e. the joint phase's kept model)."""
        epoch = (
            self.joint_epochs + alignment_epoch if alignment_epoch > 0 else self.best_joint_epoch
        )
        self.rows += diagnostics_rows(model, self.data, self.task_indices, epoch, "final")

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(DIAGNOSTICS)).astype(
            {"epoch": "int64", "loss": "float64", "grad_cosine": "float64",
             "grad_norm": "float64"}
        )


def _wide(table: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("seed", "task", "phase", "epoch") if c in table.columns]
    return table.pivot_table(index=keys, columns="split", values="loss").reset_index()


def generalization_gap(mtl: pd.DataFrame, stl: pd.DataFrame) -> pd.DataFrame:
    """Per task (and seed, when both tables have a seed column: runs are paired by seed) in
    both diagnostics tables: the generalization gap of the multitask run ``mtl`` against the
    single-task run(s) ``stl`` at matched training loss (definition in the module
    docstring). ``stl`` may hold the single-task runs of several tasks.

    Columns: [seed,] task, mtl_epoch, mtl_train_loss, mtl_val_loss, stl_epoch (matched
    e*), stl_train_loss, stl_val_loss, gap (mtl_val_loss - stl_val_loss), final_difference
    (mtl_val_loss minus the single-task run's own final val loss, the plain transfer)."""
    by_seed = "seed" in mtl.columns and "seed" in stl.columns
    mtl_wide, stl_wide = _wide(mtl), _wide(stl)
    rows = []
    finals = mtl_wide[mtl_wide["phase"] == "final"]
    for _, final in finals.iterrows():
        same = stl_wide["task"] == final["task"]
        if by_seed:
            same &= stl_wide["seed"] == final["seed"]
        runs = stl_wide[same]
        trajectory = runs[runs["phase"].isin(["joint", "alignment"])].sort_values("epoch")
        if trajectory.empty:
            continue
        distance = (trajectory["train"] - final["train"]).abs().to_numpy()
        matched = trajectory.iloc[int(np.argmin(distance))]
        stl_final = runs[runs["phase"] == "final"]
        row = {"seed": int(final["seed"])} if by_seed else {}
        row.update(
            task=final["task"], mtl_epoch=int(final["epoch"]),
            mtl_train_loss=float(final["train"]), mtl_val_loss=float(final["val"]),
            stl_epoch=int(matched["epoch"]), stl_train_loss=float(matched["train"]),
            stl_val_loss=float(matched["val"]),
            gap=float(final["val"] - matched["val"]),
            final_difference=(
                float(final["val"] - stl_final["val"].iloc[0]) if len(stl_final) else np.nan
            ),
        )
        rows.append(row)
    return pd.DataFrame(rows)
