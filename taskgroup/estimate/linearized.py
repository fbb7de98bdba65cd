"""The fast value of a subset: a first-order model around the meta-initialization.

Around theta*, an example's output after fine-tuning by a shift P w is approximately
f(x; theta* + P w) ~ f(x; theta*) + z(x)^T w, with z(x) = P^T grad f(x; theta*) the projected
gradient. For a subset S, w_S minimizes the L2-regularized loss of the tasks in S with
f(x; theta*) as a fixed offset,

    L_S(w) = (1 / n_S) sum_{x in S} l(y(x), f(x; theta*) + z(x)^T w) + (l2 / 2) ||w||^2,

with l the loss of the example's task type (:mod:`taskgroup.models.metrics`): logistic regression
for binary tasks, least squares for regression tasks; f_i(S) is task i's validation loss
under the linearized outputs f_val + Z_val w_S.

With b = f(x; theta*), the loss's first and second derivatives in the output at w = 0 are

    binary (BCE):             l'(b) = sigmoid(b) - y,  l''(b) = sigmoid(b) (1 - sigmoid(b)),
    regression ((f - y)^2):   l'(b) = 2 (b - y),       l''(b) = 2,

so the gradient and the Hessian of L_S at w = 0 are (1 / n_S) sum_t g_t and
(1 / n_S) sum_t H_t + l2 I over the tasks t in S, with per-task sums g_t = sum_x l'(b) z(x)
and H_t = sum_x l''(b) z(x) z(x)^T. The first Newton step from w = 0 needs only these, so all
subsets of a chunk are fitted from k small matrices at once; further Newton steps go through
each subset's own examples. For a subset of regression tasks only, L_S is quadratic and the
first step is its exact minimizer, the ridge solution
w_S = -(2 Z^T Z / n_S + l2 I)^{-1} 2 Z^T (b - y) / n_S; further steps leave it unchanged.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from taskgroup.data.designs import membership_matrix
from taskgroup.estimate.settings import GradientEstimateSettings
from taskgroup.models.metrics import example_losses, per_task_metric, resolve_metrics
from taskgroup.resources import SUBSET_FIT_BYTES

log = logging.getLogger(__name__)


def peak_memory_mb() -> float:
    """The peak resident memory of this process so far, in MB (Linux: ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class ProjectedSplit:
    """Projected gradients of one split: z (n, d), base outputs (n,) (logits or
    predictions), labels (n,) (0/1 for binary tasks, real for regression tasks), task_index
    (n,) int64, regression (n,) bool: the example's task is a regression task (None = all
    binary)."""

    z: torch.Tensor
    base: torch.Tensor
    labels: torch.Tensor
    task_index: torch.Tensor
    regression: torch.Tensor | None = None

    def regression_mask(self) -> torch.Tensor:
        if self.regression is None:
            return torch.zeros_like(self.task_index, dtype=torch.bool)
        return self.regression


def _derivatives(output, labels, regression):
    """l'(output) and l''(output) per example (float64), by the example's task type."""
    probability = torch.sigmoid(output)
    first = torch.where(regression, 2.0 * (output - labels), probability - labels)
    second = torch.where(
        regression, torch.full_like(output, 2.0), probability * (1.0 - probability)
    )
    return first, second


def membership(subsets: pd.DataFrame, task_names: list[str]) -> tuple[np.ndarray, torch.Tensor]:
    """Sorted subset ids (s,) and a (s, k) float64 0/1 membership matrix."""
    ids = np.sort(subsets["subset_id"].unique())
    return ids, torch.from_numpy(membership_matrix(subsets, task_names).astype(np.float64))


@dataclass
class TaskStatistics:
    """Per task sums of the offset loss at w = 0 over a training split: counts (k,)
    examples, gradients (k, d) g_t, hessians (k, d, d) H_t, all float64; support (k, d)
    bool: the coordinates on which one of the task's examples has a nonzero z (outside them
    g_t and H_t are 0)."""

    counts: torch.Tensor
    gradients: torch.Tensor
    hessians: torch.Tensor
    support: torch.Tensor


def per_task_statistics(train: ProjectedSplit, n_tasks: int) -> TaskStatistics:
    """Per task: example count, loss-gradient sum g_t and loss-Hessian sum H_t of the offset
    loss (logistic or squared, by task type) at w = 0, in float64 (memory k d^2 floats)."""
    z = train.z.double()
    residual, curvature = _derivatives(
        train.base.double(), train.labels.double(), train.regression_mask()
    )
    counts = torch.bincount(train.task_index, minlength=n_tasks).double()
    gradients = torch.zeros(n_tasks, z.shape[1], dtype=torch.float64, device=z.device)
    gradients.index_add_(0, train.task_index, residual.unsqueeze(1) * z)
    hessians = torch.zeros(n_tasks, z.shape[1], z.shape[1], dtype=torch.float64, device=z.device)
    support = torch.zeros(n_tasks, z.shape[1], dtype=torch.bool, device=z.device)
    for task in torch.unique(train.task_index).tolist():
        rows = train.task_index == task
        hessians[task] = z[rows].T @ (curvature[rows].unsqueeze(1) * z[rows])
        support[task] = (z[rows] != 0).any(dim=0)
    return TaskStatistics(counts, gradients, hessians, support)


def _solve(
    hessians: torch.Tensor, gradients: torch.Tensor, overwrite: bool = False
) -> torch.Tensor:
    """-H^{-1} g for a batch of SPD matrices (s, d, d) and vectors (s, d), by Cholesky (a
    batched LU solve in float64 hung on CPU in torch 2.13); ``overwrite``: the factor
    replaces ``hessians`` (no second (s, d, d) array)."""
    factor = torch.linalg.cholesky(hessians, out=hessians if overwrite else None)
    return -torch.cholesky_solve(gradients.unsqueeze(2), factor).squeeze(2)


def fit_shifts(
    train: ProjectedSplit, members: torch.Tensor, l2: float, newton_steps: int = 1,
    statistics: TaskStatistics | None = None,
) -> torch.Tensor:
    """The fitted projected shifts W (s, d) float64 of s subsets given by ``members`` (s, k).
    ``statistics``: :func:`per_task_statistics` of ``train`` (computed here when None; pass
    them to share them among batches). Each subset's sums add its own members' statistics
    only, on the coordinates where one of them has a gradient (the trunk and the members'
    heads, without projection): the shift is 0 on the others, which the loss only
    regularizes (memory: two (s, w, w) float64 arrays, w <= d those coordinates). Raises
    ValueError when a subset has no training examples."""
    n_tasks = members.shape[1]
    members = members.to(train.z.device)
    if statistics is None:
        statistics = per_task_statistics(train, n_tasks)
    sizes = members @ statistics.counts
    if (sizes == 0).any():
        raise ValueError("a subset has no training examples")
    dim = train.z.shape[1]
    rows, tasks = torch.nonzero(members > 0, as_tuple=True)
    subset_gradients = torch.zeros(
        members.shape[0], dim, dtype=torch.float64, device=train.z.device
    )
    subset_gradients.index_add_(0, rows, statistics.gradients[tasks])
    subset_gradients /= sizes[:, None]
    # A coordinate on which none of a subset's tasks has a gradient (the head of another
    # task, without projection) has Hessian l2 and gradient 0 in L_S: its shift is 0, and
    # the rest solves alone. Subsets with as many coordinates are solved together.
    used = (members @ statistics.support.to(members.dtype)) > 0
    widths = used.sum(dim=1)
    weights = torch.zeros(members.shape[0], dim, dtype=torch.float64, device=train.z.device)
    for width in torch.unique(widths).tolist():
        chosen = torch.nonzero(widths == width).flatten()
        if width == 0:
            continue
        coordinates = torch.nonzero(used[chosen])[:, 1].reshape(len(chosen), width)
        hessians = _subset_hessians(statistics.hessians, members[chosen], coordinates)
        hessians /= sizes[chosen, None, None]
        hessians.diagonal(dim1=1, dim2=2).add_(l2)
        gradients = subset_gradients[chosen].gather(1, coordinates)
        solved = _solve(hessians, gradients, overwrite=True)
        del hessians
        weights[chosen.unsqueeze(1), coordinates] = solved
    identity = torch.eye(dim, dtype=torch.float64, device=train.z.device)
    for _ in range(newton_steps - 1):
        weights = _newton_step_per_subset(train, members, weights, l2, identity)
    return weights


def _subset_hessians(hessians: torch.Tensor, members: torch.Tensor,
                     coordinates: torch.Tensor) -> torch.Tensor:
    """(s, w, w) float64: per subset (row of ``members`` (s, k)), the sum of its tasks'
    ``hessians`` (k, d, d) restricted to its ``coordinates`` (s, w), ascending."""
    sums = torch.zeros(coordinates.shape[0], coordinates.shape[1], coordinates.shape[1],
                       dtype=torch.float64, device=hessians.device)
    rows, tasks = torch.nonzero(members > 0, as_tuple=True)
    for task in torch.unique(tasks).tolist():
        holding = rows[tasks == task]
        picked = coordinates[holding]
        sums.index_add_(0, holding, hessians[task][picked.unsqueeze(2), picked.unsqueeze(1)])
    return sums


def subsets_per_batch(dim: int, memory_mb: float) -> int:
    """Subsets fitted at a time so that their (s, d, d) arrays, SUBSET_FIT_BYTES per entry
    (see :mod:`taskgroup.estimate.settings`), fit in ``memory_mb`` MB (at least 1)."""
    return max(1, int(memory_mb * 10**6 // (SUBSET_FIT_BYTES * dim * dim)))


def _newton_step_per_subset(train, members, weights, l2, identity) -> torch.Tensor:
    z = train.z.double()
    updated = torch.empty_like(weights)
    for row in range(weights.shape[0]):
        inside = members[row, train.task_index] > 0
        z_s, w = z[inside], weights[row]
        residual, curvature = _derivatives(
            train.base[inside].double() + z_s @ w, train.labels[inside].double(),
            train.regression_mask()[inside],
        )
        n = z_s.shape[0]
        gradient = z_s.T @ residual / n + l2 * w
        hessian = z_s.T @ (curvature.unsqueeze(1) * z_s) / n + l2 * identity
        updated[row] = w + _solve(hessian.unsqueeze(0), gradient.unsqueeze(0))[0]
    return updated


def cap_shifts(weights: torch.Tensor, norms: torch.Tensor, theta_norm: float, cap: float | None):
    """Scale down shifts whose relative size ||P w|| / ||theta*|| exceeds ``cap``."""
    if cap is None:
        return weights, norms
    relative = norms / theta_norm
    scale = torch.where(relative > cap, cap / relative, torch.ones_like(relative))
    return weights * scale[:, None], norms * scale


def linearized_values(
    val: ProjectedSplit, weights: torch.Tensor, members: torch.Tensor,
    metrics: list[str] | None = None, task_names: list[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation loss and metric (s, k) of every task under every subset's shift, from the
    linearized outputs f_val + Z_val w (all subsets in one product). ``metrics``: each
    task's metric name (see :func:`taskgroup.models.metrics.resolve_metrics`); None = "auto" with
    every task binary."""
    n_tasks = members.shape[1]
    outputs = val.base.double().unsqueeze(1) + val.z.double() @ weights.T  # (n_val, s)
    losses = example_losses(
        outputs, val.labels.double().unsqueeze(1), val.regression_mask().unsqueeze(1)
    )
    counts = torch.bincount(val.task_index, minlength=n_tasks).double().clamp(min=1)
    loss = torch.zeros(n_tasks, outputs.shape[1], dtype=torch.float64, device=outputs.device)
    loss.index_add_(0, val.task_index, losses)
    values = per_task_metric(
        outputs, val.labels, val.task_index, metrics or ["accuracy"] * n_tasks, task_names,
        context="the linearized validation split",
    )
    metric = torch.from_numpy(values).to(loss.device)
    return (loss / counts[:, None]).T, metric.T


def estimate_values(
    train: ProjectedSplit,
    val: ProjectedSplit,
    subsets: pd.DataFrame,
    task_names: list[str],
    settings: GradientEstimateSettings,
    shift_norm=None,
    theta_norm: float | None = None,
    memory_mb: float = 512.0,
    metric: str = "auto",
    task_types: list[str] | None = None,
) -> pd.DataFrame:
    """f_i(S) for every subset in ``subsets`` and member i from the linearized model, each
    subset's shift fitted with ``settings`` (l2, newton_steps, max_relative_shift).

    ``shift_norm`` maps shifts (s, d) to ||P w|| (s,) (a projector's ``shift_norms``); with
    ``theta_norm`` it adds the column relative_shift = ||P w|| / ||theta*|| and applies the
    optional cap ``settings.max_relative_shift``. The per-task statistics are computed once;
    subsets are fitted in batches whose Hessians take at most ``memory_mb`` (see
    :func:`subsets_per_batch`), so memory does not grow with their number; the process's
    peak memory is logged. ``task_types``: each task's type (None =
    all binary; the splits' ``regression`` masks must agree, else ValueError), ``metric``:
    evaluation.metric. Returns the subset_values table with estimator "gradient".
    """
    started = time.perf_counter()
    task_types = task_types or ["binary"] * len(task_names)
    metrics = resolve_metrics(metric, task_types, task_names)
    is_regression = torch.tensor([kind == "regression" for kind in task_types], dtype=torch.bool)
    for name, split in (("train", train), ("val", val)):
        expected = is_regression.to(split.task_index.device)[split.task_index]
        if not torch.equal(split.regression_mask(), expected):
            raise ValueError(f"{name} split: its regression mask disagrees with task_types")
    ids, members = membership(subsets, task_names)
    statistics = per_task_statistics(train, len(task_names))
    # In float64 once, not once per batch (the table is (n_val, d)).
    val = replace(val, z=val.z.double(), base=val.base.double())
    batch_subsets = subsets_per_batch(train.z.shape[1], memory_mb)
    losses, accuracies, relatives = [], [], []
    for start in range(0, len(ids), batch_subsets):
        block = members[start : start + batch_subsets]
        weights = fit_shifts(
            train, block, settings.l2, settings.newton_steps, statistics=statistics
        )
        relative = torch.full((block.shape[0],), float("nan"), dtype=torch.float64)
        if shift_norm is not None and theta_norm:
            norms = shift_norm(weights).double()
            weights, norms = cap_shifts(
                weights, norms, theta_norm, settings.max_relative_shift
            )
            relative = (norms / theta_norm).cpu()
        loss, accuracy = linearized_values(
            val, weights, block.to(val.z.device), metrics, task_names
        )
        losses.append(loss.cpu())
        accuracies.append(accuracy.cpu())
        relatives.append(relative)
    loss, accuracy, relative = torch.cat(losses), torch.cat(accuracies), torch.cat(relatives)
    rows, cols = np.nonzero(members.numpy())
    table = pd.DataFrame(
        {
            "subset_id": ids[rows].astype(np.int64),
            "task": np.asarray(task_names, dtype=object)[cols],
            "split": "val",
            "loss": loss.numpy()[rows, cols],
            "metric": accuracy.numpy()[rows, cols],
            "estimator": "gradient",
            "relative_shift": relative.numpy()[rows],
        }
    )
    elapsed = time.perf_counter() - started
    shifts = relative.numpy()
    log.info(
        "estimated %d subsets (d = %d, %d per batch) in %.2f s (%.0f subsets/s), peak "
        "memory of the process %.0f MB; median relative shift %s",
        len(ids), train.z.shape[1], batch_subsets, elapsed, len(ids) / max(elapsed, 1e-9),
        peak_memory_mb(),
        f"{np.median(shifts):.4f}" if np.isfinite(shifts).all() else "not computed",
    )
    return table
