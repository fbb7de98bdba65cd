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

The ridge solution is the limit of a long fit with a penalty. Real fine-tuning is the
opposite: a few epochs of an unpenalized loss, stopped early. Along an eigenvector of the
Hessian H_S of eigenvalue lambda, gradient flow on the quadratic model stopped at time
1 / l2 moves by -g (1 - exp(-lambda / l2)) / lambda, where the ridge moves by
-g / (lambda + l2): the two agree for lambda much smaller or larger than l2, and around it
the flow's cut-off is sharper (at lambda = l2 it moves 0.63 g / l2, the ridge 0.5 g / l2).
``flow_steps`` p > 1 follows the flow
by p implicit Euler steps (each one a solve with the one Cholesky factor of H_S + p l2 I);
p = 1 is the ridge solution.

A subset's system is solved on the columns its members use only. A column of z that no
member's training example touches has Hessian row l2 e_j and gradient 0 in L_S, so w_S is 0
there exactly; the task heads' projected columns are such columns for every non-member
(each head's columns are its own task's, see :mod:`taskgroup.estimate.projection`). So the
columns split into shared ones (used by two or more tasks) and each task's private ones, and
a subset of m tasks solves c + m b columns instead of d (at k = 300 most of d is heads).
A subset with fewer training examples n_S than that is solved on its examples instead: its
shift lies in the span of their projected gradients, and the Woodbury identity turns each
step into an n_S x n_S system (:func:`example_space_flow`; the same values to rounding).
The validation outputs are computed for each subset's members only.

Every subset is fitted in one metric, the projection's (its preconditioner), unless each
subset gets its own (``step_scale`` "subset", :func:`subset_step_scales`): Adam fine-tuning
on S normalizes each parameter's step by the root of its squared gradients' running mean
over S's own minibatches, so a coordinate S's members use little takes steps as long as one
they use much. With v(c) the mean of l'(x)^2 z_c(x)^2 over all training examples and v_S(c)
over S's, S is fitted in the coordinates z' = sigma_S * z, sigma_S = (v / v_S)^(1/4)
(H' = diag(sigma) H diag(sigma), g' = sigma * g) and its shift taken back as sigma_S * w'.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from taskgroup.data.designs import membership_matrix
from taskgroup.data.examples import regression_mask
from taskgroup.estimate.settings import GradientEstimateSettings, check_step_counts
from taskgroup.estimate.symmetric import one_blas_thread, row_gram, top_eigenpairs
from taskgroup.estimate.task_scales import scale_changes
from taskgroup.models.metrics import example_losses, per_task_metric, resolve_metrics
from taskgroup.resources import OUTPUT_ENTRIES, SUBSET_FIT_BYTES

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
        return regression_mask(self.regression, self.task_index)


def loss_derivatives(output, labels, regression):
    """l'(output) and l''(output) per example (float64 when ``output`` is), by the
    example's task type (``regression`` (n,) bool: squared error, else logistic)."""
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
    """Per task sums of the offset loss at w = 0 over a training split, on the projected
    columns the task's training examples use (see :func:`column_layout`): g_t and H_t
    restricted to the shared columns and the task's private ones, in blocks.

    counts (k,) examples; shared (c,) int64, the columns used by two or more tasks; private
    (k + 1, b) int64, each task's columns used by it alone, padded with d (the index of a
    column of zeros); float64 blocks: shared_gradients (k + 1, c), private_gradients
    (k + 1, b), shared_hessians (k + 1, c, c), coupling (k + 1, c, b) (shared rows, private
    columns), private_hessians (k + 1, b, b), all five None when not computed (only the
    subsets solved on their columns read them). Row k is a task without examples or
    columns (all zeros): the padding of subsets smaller than the largest of their batch.
    dim: d, the projected columns."""

    counts: torch.Tensor
    shared: torch.Tensor
    private: torch.Tensor
    shared_gradients: torch.Tensor | None
    private_gradients: torch.Tensor | None
    shared_hessians: torch.Tensor | None
    coupling: torch.Tensor | None
    private_hessians: torch.Tensor | None
    dim: int

    def reduced_dim(self, largest_subset: int) -> int:
        """Columns of the Newton system of a subset of ``largest_subset`` tasks: c + size b."""
        return len(self.shared) + largest_subset * self.private.shape[1]


def _task_rows(task_index: torch.Tensor, n_tasks: int) -> list[torch.Tensor]:
    """The row indices of every task's examples (k tensors, ascending)."""
    order = torch.argsort(task_index, stable=True)
    starts = torch.searchsorted(
        task_index[order], torch.arange(n_tasks + 1, device=task_index.device)
    ).tolist()
    return [order[starts[task] : starts[task + 1]] for task in range(n_tasks)]


def column_layout(z: torch.Tensor, task_index: torch.Tensor, n_tasks: int):
    """The columns of ``z`` (n, d) used (nonzero in some row) by two or more tasks, shared
    (c,) int64, and the columns used by one task only, private (k, b) int64 (row t: task
    t's, ascending, padded with d; b = the most any task has). A task head's projected
    columns are nonzero on its own task's examples only (see
    :mod:`taskgroup.estimate.projection`), so they are private; columns no task uses are in
    neither (a subset's fit leaves them at 0 exactly)."""
    dim = z.shape[1]
    # a column's nonzero rows counted per task, in one pass over z
    counts = torch.zeros(n_tasks, dim, dtype=torch.int32, device=z.device)
    used = counts.index_add_(0, task_index, (z != 0).to(torch.int32)) > 0
    holders = used.sum(dim=0)
    shared = torch.nonzero(holders >= 2).squeeze(1)
    alone = used & (holders == 1)
    width = int(alone.sum(dim=1).max()) if n_tasks else 0
    private = torch.full((n_tasks, width), dim, dtype=torch.int64, device=z.device)
    for task in torch.nonzero(alone.any(dim=1)).squeeze(1).tolist():
        columns = torch.nonzero(alone[task]).squeeze(1)
        private[task, : len(columns)] = columns
    return shared, private


def per_task_statistics(train: ProjectedSplit, n_tasks: int, blocks: bool = True
                        ) -> TaskStatistics:
    """Per task: example count, loss-gradient sum g_t and loss-Hessian sum H_t of the offset
    loss (logistic or squared, by task type) at w = 0 on the task's local columns (shared
    and its private ones, :func:`column_layout`), in float64 (memory k (c + b)^2 floats);
    with ``blocks`` False the counts and the columns only (the sums None; see
    :func:`with_task_sums`)."""
    z = train.z
    counts = torch.bincount(train.task_index, minlength=n_tasks).double()
    shared, private = column_layout(z, train.task_index, n_tasks)
    padding = torch.full((1, private.shape[1]), z.shape[1], dtype=torch.int64, device=z.device)
    layout = TaskStatistics(counts, shared, torch.cat([private, padding]), None, None, None,
                            None, None, z.shape[1])
    return with_task_sums(layout, train) if blocks else layout


def with_task_sums(statistics: TaskStatistics, train: ProjectedSplit) -> TaskStatistics:
    """``statistics`` (counts and columns of ``train``) with the per-task sums g_t and H_t
    on each task's local columns (see :func:`per_task_statistics`)."""
    z, shared, private = train.z, statistics.shared, statistics.private
    n_tasks = len(statistics.counts)
    residual, curvature = loss_derivatives(
        train.base.double(), train.labels.double(), train.regression_mask()
    )
    n_shared, width = len(shared), private.shape[1]
    local = n_shared + width
    gradients = torch.zeros(n_tasks + 1, local, dtype=torch.float64, device=z.device)
    hessians = torch.zeros(n_tasks + 1, local, local, dtype=torch.float64, device=z.device)
    for task, rows in enumerate(_task_rows(train.task_index, n_tasks)):
        if len(rows) == 0:
            continue
        # column d: the padding's zeros
        z_task = torch.cat([z[rows], z.new_zeros(len(rows), 1)], dim=1)
        z_task = z_task[:, torch.cat([shared, private[task]])].double()
        gradients[task] = z_task.T @ residual[rows]
        hessians[task] = z_task.T @ (curvature[rows].unsqueeze(1) * z_task)
    return TaskStatistics(
        statistics.counts, shared, private, gradients[:, :n_shared].contiguous(),
        gradients[:, n_shared:].contiguous(), hessians[:, :n_shared, :n_shared].contiguous(),
        hessians[:, :n_shared, n_shared:].contiguous(),
        hessians[:, n_shared:, n_shared:].contiguous(), statistics.dim,
    )


# Batched systems are factored and solved at most this many bytes of them at a time (about
# a core's L2 cache): a factor is then read from cache by the flow steps' triangular solves
# instead of from memory, where the solves of a large batch spend their time. Each system
# is factored alone, so this changes no value.
SYSTEM_CACHE_BYTES = 2**20
# The pairs of tasks whose direction blocks are formed in one batched product
# (CompressedCurvature.fill_pairs) gather at most this many bytes of directions.
PAIR_BATCH_BYTES = 2**25


def _systems_per_chunk(size: int, entry_bytes: int) -> int:
    """Systems of ``size`` columns factored and solved at a time: SYSTEM_CACHE_BYTES of
    them, at least one."""
    return max(1, SYSTEM_CACHE_BYTES // (entry_bytes * max(size, 1) ** 2))


def _implicit_flow(
    hessians: torch.Tensor, gradients: torch.Tensor, l2: float, steps: int
) -> torch.Tensor:
    """w(1 / l2) of the gradient flow dw/dt = -(g + H w) from w = 0, by ``steps`` implicit
    Euler steps of length h = 1 / (steps l2): (H + I / h) w_{j+1} = w_j / h - g, for a batch
    of PSD matrices H (s, r, r) (to which I / h is added in place) and
    vectors g (s, r). Returns w (s, r).

    One step is the ridge solution -(H + l2 I)^{-1} g. Along an eigenvector of H of
    eigenvalue lambda the shift is -g (1 - (a / (lambda + a))^steps) / lambda, a = steps l2:
    the flow's -g (1 - exp(-lambda / l2)) / lambda as steps grow. Unlike explicit gradient
    steps it is stable for any lambda, and every step reuses the one factor (Cholesky: a
    batched LU solve in float64 hung on CPU in torch 2.13), SYSTEM_CACHE_BYTES of factors at
    a time."""
    alpha = steps * l2
    hessians.diagonal(dim1=1, dim2=2).add_(alpha)
    n_subsets, dim = gradients.shape
    chunk = _systems_per_chunk(dim, hessians.element_size())
    weights = torch.empty_like(gradients)
    for start in range(0, n_subsets, chunk):
        part = slice(start, start + chunk)
        # Not in place: cholesky(out=) the input took 3 times as long on batched float64.
        factor = torch.linalg.cholesky(hessians[part])
        gradient = gradients[part].unsqueeze(2)
        shift = _cholesky_solve(factor, -gradient)
        for _ in range(steps - 1):
            shift = _cholesky_solve(factor, alpha * shift - gradient)
        weights[part] = shift.squeeze(2)
    return weights


def _cholesky_solve(factor: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """x with L L^T x = ``right`` for a lower Cholesky factor L: two triangular solves.
    (torch.cholesky_solve took 9 times as long as the two on batched float64 on CPU.)"""
    inner = torch.linalg.solve_triangular(factor, right, upper=False)
    return torch.linalg.solve_triangular(factor.mT, inner, upper=True)


def member_lists(members: torch.Tensor) -> torch.Tensor:
    """The member tasks (s, m) int64 of s subsets given by ``members`` (s, k), ascending,
    padded with k; m = the size of the largest subset."""
    n_tasks = members.shape[1]
    tasks = torch.arange(n_tasks, device=members.device).expand_as(members)
    padded = torch.where(members > 0, tasks, torch.full_like(tasks, n_tasks))
    largest = int((members > 0).sum(dim=1).max()) if members.shape[0] else 0
    return torch.sort(padded, dim=1).values[:, :largest]


def task_squared_gradients(train: ProjectedSplit, n_tasks: int) -> torch.Tensor:
    """(k + 1, d) float64: per task, the sum over its training examples of the squared
    projected loss gradients l'(x)^2 z(x)^2 at w = 0, column by column; row k is zeros (the
    padding of :func:`member_lists`)."""
    residual, _ = loss_derivatives(
        train.base.double(), train.labels.double(), train.regression_mask()
    )
    squared = torch.zeros(n_tasks + 1, train.z.shape[1], dtype=torch.float64,
                          device=train.z.device)
    return squared.index_add_(0, train.task_index, (residual.unsqueeze(1) * train.z.double()) ** 2)


def subset_step_scales(squared: torch.Tensor, counts: torch.Tensor, holding: torch.Tensor
                       ) -> torch.Tensor:
    """sigma_S (s, d) float64 = (v / v_S)^(1/4) for the subsets whose members are ``holding``
    (s, m) (padded with k): v_S(c), the mean of column c's squared loss gradients over the
    subset's training examples, and v(c) over all tasks' (``squared``: (k + 1, d) per-task
    sums, :func:`task_squared_gradients`; ``counts``: (k,) examples per task). A column
    where either is 0 (no member's, or no, example moves it) keeps scale 1: its gradient
    in the subset is 0 either way."""
    overall = squared[:-1].sum(dim=0) / counts.sum()
    padded_counts = torch.cat([counts.to(squared), counts.new_zeros(1).to(squared)])
    sizes = padded_counts[holding].sum(dim=1, keepdim=True)
    own = F.embedding_bag(holding, squared, mode="sum") / sizes
    moved = (own > 0) & (overall > 0)
    ratio = torch.where(moved, overall / torch.where(moved, own, 1.0), 1.0)
    return ratio**0.25


def _subset_columns(statistics: TaskStatistics, holding: torch.Tensor) -> torch.Tensor:
    """Each subset's columns (s, c + m b) in the order of its reduced Newton system: the
    shared ones, then each member's private ones (padding: d)."""
    private = statistics.private[holding].flatten(1)
    shared = statistics.shared.expand(holding.shape[0], -1)
    return torch.cat([shared, private], dim=1)


def _first_newton_step(
    statistics: TaskStatistics, holding: torch.Tensor, sizes: torch.Tensor, l2: float,
    flow_steps: int = 1, scales: torch.Tensor | None = None,
) -> torch.Tensor:
    """The first Newton step from w = 0 (s, d) of the subsets whose members are ``holding``
    (s, m), each solved on its own columns only: the shared block adds the members' shared
    blocks, each member's private block and its coupling to the shared columns are its own
    (no other task touches them), every other column stays at 0, as the (d, d) solve gives
    (their Hessian rows are l2 e_j and gradients 0). With ``flow_steps`` p > 1: p implicit
    Euler steps of the gradient flow of the quadratic model instead (see
    :func:`_implicit_flow`). ``scales`` (s, d): each subset's sigma_S
    (:func:`subset_step_scales`), its system solved in the coordinates sigma_S * z. Memory:
    one (s, r, r) float64 array, r = c + m b, and factors of at most SYSTEM_CACHE_BYTES."""
    n_subsets, largest = holding.shape
    shared, width = len(statistics.shared), statistics.private.shape[1]
    dim = statistics.reduced_dim(largest)
    hessians = statistics.shared_hessians.new_zeros(n_subsets, dim, dim)
    gradients = statistics.shared_gradients.new_zeros(n_subsets, dim)
    # The shared block and gradient: each subset's members' blocks summed in place, one
    # subset at a time (no (s, m, c, c) gather; a bag sum over the flattened blocks gave
    # the same sums 4 times slower).
    for row, tasks in enumerate(holding.tolist()):
        block = hessians[row, :shared, :shared]
        block.copy_(statistics.shared_hessians[tasks[0]])
        for task in tasks[1:]:
            block += statistics.shared_hessians[task]
    gradients[:, :shared] = F.embedding_bag(holding, statistics.shared_gradients, mode="sum")
    for slot in range(largest):
        task = holding[:, slot]
        start, stop = shared + slot * width, shared + (slot + 1) * width
        coupling = statistics.coupling[task]
        hessians[:, :shared, start:stop] = coupling
        hessians[:, start:stop, :shared] = coupling.transpose(1, 2)
        hessians[:, start:stop, start:stop] = statistics.private_hessians[task]
        gradients[:, start:stop] = statistics.private_gradients[task]
    hessians /= sizes[:, None, None]
    gradients /= sizes[:, None]
    columns = _subset_columns(statistics, holding)
    if scales is not None:
        # column d, the padding's, has no Hessian and no gradient: any scale
        reduced_scales = torch.cat([scales, scales.new_ones(n_subsets, 1)], dim=1).gather(
            1, columns
        )
        hessians.mul_(reduced_scales.unsqueeze(2)).mul_(reduced_scales.unsqueeze(1))
        gradients *= reduced_scales
    reduced = _implicit_flow(hessians, gradients, l2, flow_steps)
    del hessians
    if scales is not None:
        reduced *= reduced_scales
    weights = reduced.new_zeros(n_subsets, statistics.dim + 1)
    weights.scatter_(1, columns, reduced)
    return weights[:, : statistics.dim]


class TrainingGram:
    """The training examples' projected gradients by task, in float64, their inner products
    z(x)^T z(x') by task pair, and each example's l' and l'' at w = 0: what a subset's fit
    in example space reads (see :func:`example_space_flow`).

    When the whole (n, n) float64 Gram takes at most ``memory_mb`` MB, it is allocated
    once and each task pair's block Z_t Z_u^T is filled at its first request; else every
    request computes its blocks (at many tasks most pairs are requested once anyway).
    Either way a block is the same product of the same operands, so the budget changes no
    value. (Blocks kept one by one fragmented the heap: twice their size in RSS.)"""

    def __init__(self, train: ProjectedSplit, n_tasks: int, memory_mb: float = 512.0):
        rows = _task_rows(train.task_index, n_tasks)
        self.rows = rows
        self.z = [train.z[task_rows].double() for task_rows in rows]
        self.residual, self.curvature = loss_derivatives(
            train.base.double(), train.labels.double(), train.regression_mask()
        )
        sizes = [len(task_rows) for task_rows in rows]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        n = self.starts[-1]
        fits = n * n * 8 <= memory_mb * 10**6
        self.full = torch.empty(n, n, dtype=torch.float64, device=train.z.device) if fits else None
        self.filled = torch.zeros(n_tasks, n_tasks, dtype=torch.bool)

    def block(self, first: int, second: int) -> torch.Tensor:
        """Z_first Z_second^T (n_first, n_second) float64."""
        low, high = min(first, second), max(first, second)
        if self.full is not None:
            place = (slice(self.starts[low], self.starts[low + 1]),
                     slice(self.starts[high], self.starts[high + 1]))
            if not self.filled[low, high]:
                self.full[place] = self._product(low, high)
                self.filled[low, high] = True
            product = self.full[place]
        else:
            product = self._product(low, high)
        return product if first <= second else product.T

    def own_block(self, task: int) -> torch.Tensor:
        """Z_t Z_t^T (n_t, n_t) float64 of ``task``, for a caller that reads it once: the
        kept block when it was requested before, else computed and not kept (writing it into
        the untouched full Gram would fault in its memory a page per row)."""
        if self.full is not None and self.filled[task, task]:
            return self.block(task, task)
        return self._product(task, task)

    def _product(self, low: int, high: int) -> torch.Tensor:
        # a task's own block is symmetric: half the arithmetic
        return row_gram(self.z[low]) if low == high else self.z[low] @ self.z[high].T

    def kernel(self, tasks: list[int]) -> torch.Tensor:
        """K = Z_R Z_R^T (n_R, n_R) of the training rows R of ``tasks``, task by task."""
        return torch.cat(
            [torch.cat([self.block(first, second) for second in tasks], dim=1)
             for first in tasks]
        )

    def scaled_kernel(self, tasks: list[int], scales: torch.Tensor) -> torch.Tensor:
        """Z_R diag(scales^2) Z_R^T (n_R, n_R) for column scales (d,): the Gram of the
        rows scaled column by column, computed for this call (no block is kept)."""
        return row_gram(torch.cat([self.z[task] for task in tasks]) * scales)

    def shift(self, tasks: list[int], coefficients: torch.Tensor) -> torch.Tensor:
        """Z_R^T a (d,) for coefficients a (n_R,) on the training rows of ``tasks``."""
        shift, start = None, 0
        for task in tasks:
            stop = start + len(self.rows[task])
            part = coefficients[start:stop] @ self.z[task]
            shift = part if shift is None else shift + part
            start = stop
        return shift

    def derivatives(self, tasks: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """l' and l'' (n_R,) of the training rows of ``tasks``, task by task."""
        rows = torch.cat([self.rows[task] for task in tasks])
        return self.residual[rows], self.curvature[rows]


def example_space_flow(
    kernel: torch.Tensor, residual: torch.Tensor, curvature: torch.Tensor, l2: float,
    steps: int,
) -> torch.Tensor:
    """The coefficients a (n,) of the shift w = Z^T a that :func:`_implicit_flow` gives for
    one subset, from its n training examples' Gram K = Z Z^T (n, n), l' and l'' (n,).

    With H = U^T U / n, U = diag(sqrt(l'')) Z, and g = Z^T l' / n, every implicit Euler
    step (H + alpha I) w' = alpha w - g (alpha = steps l2) keeps w in the row space of Z:
    for w = Z^T a, the right side is Z^T q with q = alpha a - l' / n, and by the Woodbury
    identity (H + alpha I)^{-1} = (I - U^T (n alpha I + U U^T)^{-1} U) / alpha, so
    a' = (q - s * y) / alpha with s = sqrt(l'') and (n alpha I + S K S) y = s * (K q),
    S = diag(s). The system is n x n, symmetric positive definite, and factored once
    (Cholesky); no l'' is divided by, so examples of zero curvature need no care."""
    n = kernel.shape[0]
    alpha = steps * l2
    scale = curvature.sqrt()
    system = scale[:, None] * kernel * scale[None, :]
    system.diagonal().add_(n * alpha)
    factor = torch.linalg.cholesky(system)
    coefficients = torch.zeros_like(residual)
    for _ in range(steps):
        right = alpha * coefficients - residual / n
        inner = _cholesky_solve(factor, (scale * (kernel @ right)).unsqueeze(1))[:, 0]
        coefficients = (right - scale * inner) / alpha
    return coefficients


def _first_step_in_example_space(
    gram: TrainingGram, holding: torch.Tensor, l2: float, flow_steps: int, dim: int,
    scales: torch.Tensor | None = None,
) -> torch.Tensor:
    """The shifts (s, d) of :func:`_first_newton_step` for the subsets whose members are
    ``holding`` (s, m) (padded with k), each solved on its n_S training examples instead
    of its columns (:func:`example_space_flow`), one subset at a time: cheaper when n_S
    is below the subset's column count. ``scales`` (s, d): each subset's sigma_S, its
    Gram that of sigma_S * z (formed for the subset) and its shift sigma_S^2 * Z_S^T a.
    Memory: a few (n_S, n_S) float64 arrays."""
    n_tasks = len(gram.rows)
    weights = torch.zeros(holding.shape[0], dim, dtype=torch.float64, device=holding.device)
    for row, members in enumerate(holding.tolist()):
        tasks = [task for task in members if task < n_tasks]
        residual, curvature = gram.derivatives(tasks)
        kernel = gram.kernel(tasks) if scales is None else gram.scaled_kernel(tasks, scales[row])
        coefficients = example_space_flow(kernel, residual, curvature, l2, flow_steps)
        weights[row] = gram.shift(tasks, coefficients)
        if scales is not None:
            weights[row] *= scales[row] ** 2
    return weights


@dataclass
class CompressedCurvature:
    """Every task's curvature kept in its top eigen-directions, for the subset fits solved
    in example space (see :func:`compress_curvature`).

    directions (R + 1, d) float64: the rows of F_t^T, task after task, then one zero row
    (index R, the padding), with F_t = U_t^T Q_t, U_t = diag(sqrt(l'')) Z_t the task's
    curvature-weighted training gradients and Q_t the eigenvectors of U_t U_t^T kept, so
    that F_t F_t^T is H_t = U_t^T U_t without its dropped directions; gradients (k + 1,
    d): g_t = Z_t^T l' (exact; task k, the padding, 0); ranks (k + 1,) int64: the
    directions kept per task (R their sum; the padding's 0); offsets (k + 1,) int64: each
    task's first row of ``directions`` (the padding's R).

    The inner products a subset's system reads, F_t^T F_u and F_t^T g_u for the pairs of
    its members, are formed by :meth:`fill_pairs` for the pairs met, one block per ordered
    pair: blocks (B, M, M), M = 1 + the most directions any task keeps; the block of (t,
    u) is [g_t, F_t]^T [g_u, F_u], each task's gradient in position 0 and its directions
    after it, padded by zeros to M (that of (u, t) its transpose); block 0 is zeros (the
    padding task's); pair_block (k + 1, k + 1) int64: the block of each ordered pair (-1:
    not formed)."""

    directions: torch.Tensor
    gradients: torch.Tensor
    ranks: torch.Tensor
    offsets: torch.Tensor
    blocks: torch.Tensor
    pair_block: torch.Tensor

    @property
    def block_size(self) -> int:
        """M: the side of a pair's block."""
        return self.blocks.shape[1]

    def block_entries(self, first_task: torch.Tensor, first_step: torch.Tensor,
                      second_task: torch.Tensor, second_step: torch.Tensor) -> torch.Tensor:
        """The places in ``blocks.view(-1)`` of the inner products of the ``first_step``-th
        row of [g, F]^T of ``first_task`` with the ``second_step``-th of ``second_task``
        (step 0: the task's gradient, step i its i-th direction), tensors of any
        broadcastable shapes; the padding task k, and steps past a task's rank, read 0.
        Their pair's blocks must be formed."""
        size, tasks = self.block_size, self.pair_block.shape[1]
        # one-index gathers: a two-index gather of (s, q, q) entries is several times slower
        block = self.pair_block.to(first_task.device).view(-1)[first_task * tasks + second_task]
        return block * (size * size) + (first_step * size + second_step)

    def pairs_needed(self, holding: torch.Tensor) -> torch.Tensor:
        """(p, 2) int64: the pairs t <= u of members of the subsets ``holding`` (s, m)
        (padded with k) whose blocks are not formed yet, both tasks real."""
        n_tasks = self.ranks.shape[0] - 1
        pairs = torch.zeros(n_tasks + 1, n_tasks + 1, dtype=torch.bool)
        members = holding.cpu()
        pairs[members[:, :, None], members[:, None, :]] = True
        pairs[n_tasks, :] = pairs[:, n_tasks] = False
        return torch.nonzero(torch.triu(pairs & (self.pair_block.cpu() < 0)))

    def pair_bytes(self, holding: torch.Tensor) -> int:
        """The bytes of ``blocks`` once the pairs of the subsets ``holding`` (s, m) are
        formed."""
        blocks = len(self.blocks) + 2 * len(self.pairs_needed(holding))
        return blocks * self.block_size**2 * self.blocks.element_size()

    def fill_pairs(self, holding: torch.Tensor) -> None:
        """Form the blocks of every pair of members of the subsets ``holding`` (s, m)
        (padded with k) not formed yet: only the pairs that subsets hold (at k = 300 they
        are a few of the k^2), each by its own product of the two tasks' directions and
        gradients padded to M, so a block's bits do not depend on which subsets asked for
        it."""
        needed = self.pairs_needed(holding).to(self.directions.device)
        if len(needed) == 0:
            return
        size, device = self.block_size, self.directions.device
        ranks, offsets = self.ranks.to(device), self.offsets.to(device)
        # a pair's product covers the larger of its ranks, not M - 1: pairs of equal width
        # together (the block's entries past both ranks stay 0)
        widths = torch.maximum(ranks[needed[:, 0]], ranks[needed[:, 1]])
        order = torch.argsort(widths, stable=True)
        needed, widths = needed[order], widths[order]
        # each task's [g_t, F_t] as (M, d) rows, zeros past its rank: a pair's operands are
        # then whole rows of one array
        steps = torch.arange(size - 1, device=device)
        places = torch.where(steps[None, :] < ranks[:, None], offsets[:, None] + steps[None, :],
                             self.directions.shape[0] - 1)
        stacked = torch.cat([self.gradients[:, None, :], self.directions[places]], dim=1)
        # the new blocks are written in place after the old ones: (t, u) at its pair's
        # place among the first n, (u, t) among the next n
        old, count = len(self.blocks), len(needed)
        grown = self.blocks.new_zeros(old + 2 * count, size, size)
        grown[:old] = self.blocks
        bounds = torch.searchsorted(widths, torch.arange(size + 1, device=device)).tolist()
        for width in range(size):
            low, high = bounds[width], bounds[width + 1]
            if low == high:
                continue
            taken = stacked[:, : width + 1]
            # pairs at a time: their gathered rows, two (width + 1, d) float64 per pair,
            # in PAIR_BATCH_BYTES
            chunk = max(1, PAIR_BATCH_BYTES // (16 * (width + 1) * stacked.shape[2]))
            for start in range(low, high, chunk):
                first, second = needed[start : min(start + chunk, high)].unbind(1)
                product = torch.bmm(taken.index_select(0, first),
                                    taken.index_select(0, second).transpose(1, 2))
                place = slice(old + start, old + start + len(first))
                grown[place, : width + 1, : width + 1] = product
                place = slice(old + count + start, old + count + start + len(first))
                grown[place, : width + 1, : width + 1] = product.transpose(1, 2)
        # each ordered pair's own block (t's rows, u's columns): a system's entry is then
        # read without asking which of its two tasks comes first
        first, second = needed.cpu().unbind(1)
        ids = old + torch.arange(count)
        self.pair_block[first, second] = ids
        self.pair_block[second, first] = ids + count
        self.blocks = grown

    def subset_ranks(self, holding: torch.Tensor) -> torch.Tensor:
        """(s,) int64: the directions kept by the members ``holding`` (s, m) (padded with
        k) of each subset together, the size of its compressed system."""
        return self.ranks.to(holding.device)[holding].sum(dim=1)

    def subset_rows(self, holding: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The task (s, ``width``) and step (s, ``width``) int64 of each subset's unknowns,
        for its members ``holding`` (s, m) (padded with k): every member's directions,
        member after member, then the padding task k (step 0) up to ``width`` (at least
        :meth:`subset_ranks`)."""
        n_subsets = holding.shape[0]
        ranks = self.ranks.to(holding.device)[holding]
        most = int(ranks.max()) if ranks.numel() else 0
        steps = torch.arange(most, device=holding.device)
        kept = (steps < ranks[:, :, None]).reshape(n_subsets, -1)
        places = kept.cumsum(dim=1) - 1
        tasks = torch.full((n_subsets, width), len(self.ranks) - 1, dtype=torch.int64,
                           device=holding.device)
        task_steps = torch.zeros_like(tasks)
        which = torch.arange(n_subsets, device=holding.device)[:, None].expand_as(kept)
        tasks[which[kept], places[kept]] = holding[:, :, None].expand(
            -1, -1, most).reshape(n_subsets, -1)[kept]
        task_steps[which[kept], places[kept]] = steps.repeat(n_subsets, ranks.shape[1])[kept]
        return tasks, task_steps


def compress_curvature(
    gram: TrainingGram, l2: float, tolerance: float, memory_mb: float = 512.0
) -> CompressedCurvature | None:
    """Each task's curvature H_t = U_t^T U_t (U_t = diag(sqrt(l'')) Z_t, its n_t training
    examples) cut to its eigen-directions of eigenvalue above ``tolerance`` x l2 x n_t,
    from the eigendecomposition of the n_t x n_t matrix U_t U_t^T (the Gram's diagonal
    block).

    What the tasks of a subset S drop lowers its mean Hessian sum_t H_t / n_S by a PSD
    matrix of norm at most ``tolerance`` x l2 (as sum_t n_t = n_S), and the flow stopped at
    time 1 / l2 (ridge or implicit Euler steps) then moves by at most ``tolerance`` x
    ||g_S|| / l2 differently: ``tolerance`` times the longest shift it can make, that of a
    loss without curvature. ``tolerance`` 0 keeps every direction of positive eigenvalue
    (the same fit to rounding). Returns None when the directions, (R + 1, d) float64 for
    the R kept in all, would take more than ``memory_mb`` MB (many tasks that keep many
    directions: their subsets are then solved on their examples). The pairs' blocks are
    formed later, for the pairs that subsets hold (:meth:`CompressedCurvature.fill_pairs`;
    their memory, :meth:`CompressedCurvature.pair_bytes`)."""
    n_tasks = len(gram.rows)
    kept, gradients = [], []
    # one BLAS thread set once for the k products and eigendecompositions, not per call
    with one_blas_thread():
        for task, rows in enumerate(gram.rows):
            z = gram.z[task]
            # row vectors times z (n_t, d): a product with z^T on the left reads z across its
            # rows, which is slower for these shapes
            gradients.append(gram.residual[rows] @ z)
            if len(rows) == 0:
                kept.append(z.new_zeros(0, z.shape[1]))
                continue
            scale = gram.curvature[rows].sqrt()
            _, vectors = top_eigenpairs(
                scale[:, None] * gram.own_block(task) * scale[None, :],
                above=tolerance * l2 * len(rows),
            )
            kept.append((vectors.to(z) * scale[:, None]).T @ z)
    ranks = torch.tensor([factor.shape[0] for factor in kept] + [0], dtype=torch.int64)
    total = int(ranks.sum())
    dim = gram.z[0].shape[1] if n_tasks else 0
    if 8 * (total + 1) * dim > memory_mb * 10**6:
        return None
    directions = gram.residual.new_zeros(total + 1, dim)
    if total:
        directions[:total] = torch.cat(kept)
    all_gradients = gram.residual.new_zeros(n_tasks + 1, dim)
    if n_tasks:
        all_gradients[:n_tasks] = torch.stack(gradients)
    offsets = torch.cumsum(ranks, dim=0) - ranks
    # the directions' inner products are formed for the pairs of tasks the subsets hold
    # (CompressedCurvature.fill_pairs), not for all k^2; block 0 is the padding's zeros
    size = int(ranks.max()) + 1
    pair_block = torch.full((n_tasks + 1, n_tasks + 1), -1, dtype=torch.int64)
    pair_block[n_tasks, :] = pair_block[:, n_tasks] = 0
    return CompressedCurvature(
        directions, all_gradients, ranks, offsets, directions.new_zeros(1, size, size),
        pair_block,
    )


# Compressed systems are padded to a multiple of this: subsets of nearby sizes share a
# batched factorization, fewer than this many columns more each (a padded column is exact).
SYSTEM_STEP = 8


def padded_size(columns: torch.Tensor) -> torch.Tensor:
    """``columns`` rounded up to a multiple of SYSTEM_STEP: the size of the compressed
    system each subset is factored in."""
    return -(-columns // SYSTEM_STEP) * SYSTEM_STEP


def compressed_flow(
    curvature: CompressedCurvature, holding: torch.Tensor, sizes: torch.Tensor, l2: float,
    steps: int,
) -> torch.Tensor:
    """The shifts (s, d) of :func:`_implicit_flow` for the subsets whose members are
    ``holding`` (s, m) (padded with k) and whose training examples number ``sizes`` (s,),
    with each member's curvature cut as ``curvature`` holds it: H = F F^T / n_S, F the
    members' kept directions side by side (d, q), q their number (see
    :meth:`CompressedCurvature.subset_ranks`), and g = G 1 / n_S, G their gradients (d, m).

    Every iterate stays in the span of G and F: w = G a + F b. A step with step size
    1 / alpha (alpha = steps l2), w' = (H + alpha I)^{-1} (alpha w - g), expanded with
    the Woodbury identity (H + alpha I)^{-1} = (I - F S^{-1} F^T) / alpha, S =
    n_S alpha I + F^T F, keeps every member's coefficient in a equal, a_j = -j / (n_S
    alpha) after j steps, and gives b_{j+1} = S^{-1} (n_S alpha b_j + (j + 1) F^T g /
    alpha): one q x q Cholesky factor per subset, from the cached F_t^T F_u (formed for
    the pairs of members met, :meth:`CompressedCurvature.fill_pairs`) and F_t^T g_u,
    batched over the subsets of equal q rounded up to SYSTEM_STEP (a subset's value does
    not depend on the others given with it), then F b task by task over the subsets that
    hold it. Memory: the (s, d) shifts, the (s, R + 1) coefficients b and two arrays of
    systems of at most SYSTEM_CACHE_BYTES."""
    n_subsets = holding.shape[0]
    alpha = steps * l2
    buckets = padded_size(curvature.subset_ranks(holding))
    n_rows = curvature.directions.shape[0]
    direction_weights = curvature.directions.new_zeros(n_subsets, n_rows)
    curvature.fill_pairs(holding)
    # the systems and F^T g are gathered from the flat blocks: one index per entry (a
    # two-index gather of the (s, q, q) entries took 3 times as long)
    flat = curvature.blocks.view(-1)
    for width in torch.unique(buckets).tolist():
        subsets = torch.nonzero(buckets == width).squeeze(1)
        all_tasks, all_steps = curvature.subset_rows(holding[subsets], width)
        # the subsets of one size, a cache's worth at a time
        chunk = _systems_per_chunk(width, direction_weights.element_size())
        for start in range(0, len(subsets), chunk):
            chosen = subsets[start : start + chunk]
            tasks, task_steps = all_tasks[start : start + chunk], all_steps[start : start + chunk]
            scaled = (sizes[chosen] * alpha)[:, None, None]
            # a direction's row in the blocks follows its task's gradient's
            entries = curvature.block_entries(tasks[:, :, None], task_steps[:, :, None] + 1,
                                              tasks[:, None, :], task_steps[:, None, :] + 1)
            system = flat.index_select(0, entries.reshape(-1)).view(len(chosen), width, width)
            # a padded unknown (the padding task) has a zero row and column in F^T F: its
            # diagonal n_S alpha keeps the system definite and its coefficient 0
            system.diagonal(dim1=1, dim2=2).add_(scaled[:, :, 0])
            factor = torch.linalg.cholesky(system)
            del system
            # F^T g n_S: each unknown's direction against the sum of the members' gradients
            members = holding[chosen][:, None, :]
            cross = flat[curvature.block_entries(
                tasks[:, :, None], task_steps[:, :, None] + 1, members, torch.zeros_like(members)
            )].sum(dim=2, keepdim=True)
            b = torch.zeros_like(cross)
            for step in range(steps):
                b = _cholesky_solve(factor, scaled * b + (step + 1) / scaled * cross)
            rows = curvature.offsets.to(tasks.device)[tasks] + task_steps
            part = direction_weights.new_zeros(len(chosen), n_rows)
            direction_weights[chosen] = part.scatter_add_(1, rows, b[:, :, 0])
    # w = G a + F b: a is -steps / (n_S alpha) for every member
    task_weights = direction_weights.new_zeros(n_subsets, curvature.gradients.shape[0])
    task_weights.scatter_add_(
        1, holding, (-steps / (sizes * alpha))[:, None].expand_as(holding).to(task_weights)
    )
    weights = task_weights @ curvature.gradients
    # F b task by task, over the subsets holding the task: a subset's b is zero outside its
    # members' rows, so the product over all R rows would be mostly zeros (m of k tasks)
    for task in torch.unique(holding).tolist():
        first, rank = int(curvature.offsets[task]), int(curvature.ranks[task])
        if rank == 0:
            continue
        holders = torch.nonzero((holding == task).any(dim=1)).squeeze(1)
        rows = slice(first, first + rank)
        weights.index_add_(
            0, holders, direction_weights[holders, rows] @ curvature.directions[rows]
        )
    return weights


# A subset solved on its columns is compressed only when it has at least this many: a
# smaller system is cheaper to factor than the compressed curvature is to set up (every
# task's eigendecomposition and the directions' inner products, paid once per job).
MIN_COMPRESSED_COLUMNS = 128


def may_compress(exact_sizes: torch.Tensor, in_examples: torch.Tensor) -> torch.Tensor:
    """(s,) bool: the subsets that compressed curvature may serve: those solved on their
    examples, and those solved on at least MIN_COMPRESSED_COLUMNS columns
    (``exact_sizes`` (s,): their exact systems' unknowns, see :func:`exact_system_sizes`)."""
    return in_examples | (exact_sizes >= MIN_COMPRESSED_COLUMNS)


def compressed_rows(
    curvature: CompressedCurvature, holding: torch.Tensor, exact_sizes: torch.Tensor,
    in_examples: torch.Tensor,
) -> torch.Tensor:
    """(s,) bool: the subsets (:func:`may_compress`) whose members, ``holding`` (s, m)
    (padded with k), keep at most half as many directions together as the exact system
    they would otherwise be solved in has unknowns (2 q <= ``exact_sizes`` (s,): n_S on
    their examples where ``in_examples``, c + m b on their columns): solved on those
    (:func:`compressed_flow`). A factor costs the cube of its size, and the batched
    factors of the compressed systems cost more per entry than one exact factor."""
    return may_compress(exact_sizes, in_examples) & (
        2 * curvature.subset_ranks(holding) <= exact_sizes.long()
    )


def subset_columns(statistics: TaskStatistics, members: torch.Tensor) -> torch.Tensor:
    """(s,) int64: the columns of each subset's reduced system (c + m b) for ``members``
    (s, k), on their device."""
    return len(statistics.shared) + (members > 0).sum(dim=1) * statistics.private.shape[1]


def example_space_rows(statistics: TaskStatistics, members: torch.Tensor) -> torch.Tensor:
    """(s,) bool: the subsets of ``members`` (s, k) fitted in example space, those whose
    training examples are fewer than the columns of their reduced system (c + m b): a
    Cholesky factor costs the cube of its size, and this choice depends on the data and
    the subsets only. On the device of ``members``."""
    sizes = members @ statistics.counts.to(members.device)
    return sizes < subset_columns(statistics, members)


def exact_system_sizes(statistics: TaskStatistics, members: torch.Tensor,
                       in_examples: torch.Tensor) -> torch.Tensor:
    """(s,) int64: the unknowns of each subset's exact system: its training examples
    where ``in_examples``, else its columns (c + m b)."""
    sizes = (members @ statistics.counts.to(members.device)).long()
    return torch.where(in_examples, sizes, subset_columns(statistics, members))


def fit_shifts(
    train: ProjectedSplit, members: torch.Tensor, l2: float, newton_steps: int = 1,
    statistics: TaskStatistics | None = None, flow_steps: int = 1,
    gram: TrainingGram | None = None, space: str = "auto",
    curvature: CompressedCurvature | None = None, scales: torch.Tensor | None = None,
) -> torch.Tensor:
    """The fitted projected shifts W (s, d) float64 of s subsets given by ``members`` (s, k).
    ``statistics``: :func:`per_task_statistics` of ``train`` (computed here when None; pass
    them to share them among batches). Each subset's system adds its own members'
    statistics only, on the columns they use (memory: two (s, r, r) float64 arrays, r =
    ``statistics.reduced_dim(m)`` for the largest subset's size m), or, for a subset with
    fewer training examples than those columns, the same first step is solved on its
    examples (``gram``: a :class:`TrainingGram` of ``train``, built here when None and
    needed; ``space`` "features" or "examples" forces one way for every subset, "auto"
    chooses by :func:`example_space_rows`; the two agree to rounding); with ``curvature``
    (:func:`compress_curvature` at this l2), a subset whose members' kept directions
    together (q) are at most half the unknowns of the exact system it would get (its
    examples or its columns, :func:`compressed_rows`) is solved on those instead
    (:func:`compressed_flow`; needs ``flow_steps`` or ``newton_steps`` 1, as the others).
    ``flow_steps`` > 1: the gradient flow of the quadratic model at w = 0
    stopped at time 1 / l2 instead of the ridge solution (see :func:`_implicit_flow`);
    then ``newton_steps`` must be 1. ``scales`` (s, d): each subset fitted in its own
    metric, the coordinates sigma_S * z (:func:`subset_step_scales`), either way; then
    neither ``curvature`` nor ``newton_steps`` > 1. Raises ValueError when a subset has no
    training examples, both step counts exceed 1, ``space`` is unknown, or ``scales``
    come with ``curvature`` or more Newton steps."""
    if space not in ("auto", "features", "examples"):
        raise ValueError(f"space: expected auto, features or examples, found {space!r}")
    check_step_counts(newton_steps, flow_steps)
    if scales is not None and (curvature is not None or newton_steps > 1):
        raise ValueError("subsets in their own metric (scales) are fitted exactly, with one "
                         "Newton step: no compressed curvature, newton_steps 1")
    n_tasks = members.shape[1]
    members = members.to(train.z.device)
    if statistics is None:
        statistics = per_task_statistics(train, n_tasks)
    sizes = members @ statistics.counts
    if (sizes == 0).any():
        raise ValueError("a subset has no training examples")
    holding = member_lists(members)
    if space == "auto":
        in_examples = example_space_rows(statistics, members)
    else:
        in_examples = torch.full_like(sizes, space == "examples", dtype=torch.bool)
    weights = torch.zeros(members.shape[0], statistics.dim, dtype=torch.float64,
                          device=members.device)
    compressed = torch.zeros_like(in_examples)
    if curvature is not None:
        compressed = compressed_rows(
            curvature, holding, exact_system_sizes(statistics, members, in_examples),
            in_examples,
        )
        if compressed.any():
            weights[compressed] = compressed_flow(
                curvature, holding[compressed], sizes[compressed], l2, flow_steps
            )
    on_columns = ~in_examples & ~compressed
    if on_columns.any():
        if statistics.shared_hessians is None:
            raise ValueError("subsets solved on their columns need the per-task sums: "
                             "per_task_statistics(..., blocks=True)")
        weights[on_columns] = _first_newton_step(
            statistics, member_lists(members[on_columns]), sizes[on_columns], l2,
            flow_steps, None if scales is None else scales[on_columns],
        )
    on_examples = in_examples & ~compressed
    if on_examples.any():
        if gram is None:
            gram = TrainingGram(train, n_tasks)
        weights[on_examples] = _first_step_in_example_space(
            gram, holding[on_examples], l2, flow_steps, statistics.dim,
            None if scales is None else scales[on_examples],
        )
    for _ in range(newton_steps - 1):
        weights = _newton_step_per_subset(train, members, weights, l2, statistics, holding)
    return weights


def subsets_per_batch(dim: int, memory_mb: float) -> int:
    """Subsets fitted at a time so that their (s, r, r) arrays of ``dim`` = r columns,
    SUBSET_FIT_BYTES per entry (see :mod:`taskgroup.estimate.settings`), fit in
    ``memory_mb`` MB (at least 1)."""
    return max(1, int(memory_mb * 10**6 // (SUBSET_FIT_BYTES * dim * dim)))


def _newton_step_per_subset(train, members, weights, l2, statistics, holding) -> torch.Tensor:
    """One more Newton step of every subset from ``weights`` (s, d), through its own
    examples, on its own columns (the others stay at 0)."""
    z = torch.cat([train.z.double(), train.z.new_zeros(train.z.shape[0], 1).double()], dim=1)
    padded = torch.cat([weights, weights.new_zeros(weights.shape[0], 1)], dim=1)
    columns = _subset_columns(statistics, holding)
    updated = torch.zeros_like(padded)
    for row in range(weights.shape[0]):
        inside = members[row, train.task_index] > 0
        z_s, w = z[inside][:, columns[row]], padded[row, columns[row]]
        residual, curvature = loss_derivatives(
            train.base[inside].double() + z_s @ w, train.labels[inside].double(),
            train.regression_mask()[inside],
        )
        n = z_s.shape[0]
        gradient = z_s.T @ residual / n + l2 * w
        hessian = z_s.T @ (curvature.unsqueeze(1) * z_s) / n
        # the Newton step -(hessian + l2 I)^{-1} gradient: one implicit Euler step
        step = _implicit_flow(hessian.unsqueeze(0), gradient.unsqueeze(0), l2, 1)[0]
        updated[row, columns[row]] = w + step
    return updated[:, :-1]


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
    only_members: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation loss and metric (s, k) float64 of every task under every subset's shift,
    from the linearized outputs f_val + Z_val w (one product per task for all subsets, in
    Z_val's dtype: float32 projected gradients carry float32 rounding already, and a
    float32 product adds rounding of the same order, in half the time of a float64 one).
    ``metrics``: each task's metric name (see :func:`taskgroup.models.metrics.resolve_metrics`);
    None = "auto" with every task binary. ``only_members``: compute the entries of each
    subset's members only (``members`` (s, k) > 0), NaN elsewhere. A task without
    validation examples gets loss 0 and metric NaN."""
    n_subsets, n_tasks = members.shape
    metrics = metrics or ["accuracy"] * n_tasks
    base, labels = val.base.double(), val.labels.double()
    shifts = weights.to(val.z.dtype)
    regression = val.regression_mask()
    task_rows = _task_rows(val.task_index, n_tasks)
    loss = torch.full((n_subsets, n_tasks), float("nan"), dtype=torch.float64)
    metric = np.full((n_subsets, n_tasks), np.nan)
    held = members > 0
    tasks = torch.nonzero(held.any(dim=0)).squeeze(1).tolist() if only_members else range(
        n_tasks
    )
    for task in tasks:
        if only_members:
            holding = torch.nonzero(held[:, task]).squeeze(1)
        else:
            holding = torch.arange(n_subsets, device=weights.device)
        rows = task_rows[task]
        if len(rows) == 0:
            loss[holding.cpu(), task] = 0.0
            continue
        name = task if task_names is None else task_names[task]
        # At most OUTPUT_ENTRIES outputs at a time: a task's rows times its subsets would
        # otherwise grow with the data and the chunk (every subset's column is its own).
        for subsets in holding.split(max(1, OUTPUT_ENTRIES // len(rows))):
            outputs = base[rows].unsqueeze(1) + (val.z[rows] @ shifts[subsets].T).double()
            losses = example_losses(
                outputs, labels[rows].unsqueeze(1), regression[rows].unsqueeze(1)
            )
            loss[subsets.cpu(), task] = (losses.sum(dim=0) / len(rows)).cpu()
            metric[subsets.cpu().numpy(), task] = per_task_metric(
                outputs, labels[rows], torch.zeros_like(rows), [metrics[task]], [name],
                context="the linearized validation split",
            )[0]
    return loss, torch.from_numpy(metric)


def base_losses(val: ProjectedSplit, task_names: list[str]) -> pd.Series:
    """Each task's mean validation loss (task -> loss) at w = 0: the linearized model's at
    the meta-initialization (0 for a task without validation examples, as in
    :func:`linearized_values`)."""
    losses = example_losses(val.base.double(), val.labels.double(), val.regression_mask())
    sums = torch.zeros(len(task_names), dtype=torch.float64, device=losses.device)
    sums.index_add_(0, val.task_index, losses)
    counts = torch.bincount(val.task_index, minlength=len(task_names)).clamp_min(1)
    return pd.Series((sums / counts).cpu().numpy(), index=task_names)


def member_values_table(
    ids: np.ndarray, members: torch.Tensor, task_names: list[str], loss: torch.Tensor,
    metric: torch.Tensor, relative: torch.Tensor | None = None,
) -> pd.DataFrame:
    """The subset_values rows (estimator "gradient", split "val") of every subset's members:
    ``ids`` (s,) subset ids, ``members`` (s, k) membership, ``loss`` and ``metric`` (s, k)
    (only the members' entries are read), and, when given, ``relative`` (s,) as the column
    relative_shift."""
    rows, cols = np.nonzero(members.numpy())
    columns = {
        "subset_id": ids[rows].astype(np.int64),
        "task": np.asarray(task_names, dtype=object)[cols],
        "split": "val",
        "loss": loss.numpy()[rows, cols],
        "metric": metric.numpy()[rows, cols],
        "estimator": "gradient",
    }
    if relative is not None:
        columns["relative_shift"] = relative.numpy()[rows]
    return pd.DataFrame(columns)


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
    task_scales: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """f_i(S) for every subset in ``subsets`` and member i from the linearized model, each
    subset's shift fitted with ``settings`` (l2, newton_steps, flow_steps,
    max_relative_shift); with ``task_scales`` (a task scales table: columns task, scale
    and offset, see :mod:`taskgroup.estimate.task_scales`) each loss's change from the
    linearized loss at w = 0 (the meta-initialization's) is multiplied by its task's scale
    and moved by its offset.

    ``shift_norm`` maps shifts (s, d) to ||P w|| (s,) (a projector's ``shift_norms``); with
    ``theta_norm`` it adds the column relative_shift = ||P w|| / ||theta*|| and applies the
    optional cap ``settings.max_relative_shift``. The per-task statistics are computed once;
    subsets are fitted in batches whose Hessians take at most ``memory_mb`` (see
    :func:`subsets_per_batch`), so memory does not grow with their number; subsets with
    fewer training examples than columns are solved on their examples (see
    :func:`fit_shifts`), whose Gram is kept when it takes at most ``memory_mb`` more
    (:class:`TrainingGram`); the process's
    peak memory is logged. ``task_types``: each task's type (None =
    all binary; the splits' ``regression`` masks must agree, else ValueError), ``metric``:
    evaluation.metric. ``settings.step_scale`` "fixed" or "subset" (see
    :func:`subset_step_scales`; "auto" raises ValueError: resolve it for the projection
    first, :meth:`GradientEstimateSettings.for_projection`). Returns the subset_values
    table with estimator "gradient".
    """
    if settings.step_scale not in ("fixed", "subset"):
        raise ValueError(f"gradient_estimate.step_scale {settings.step_scale!r}: resolve it "
                         "for the projection first (GradientEstimateSettings.for_projection)")
    started = time.perf_counter()
    task_types = task_types or ["binary"] * len(task_names)
    metrics = resolve_metrics(metric, task_types, task_names)
    is_regression = torch.tensor([kind == "regression" for kind in task_types], dtype=torch.bool)
    for name, split in (("train", train), ("val", val)):
        expected = is_regression.to(split.task_index.device)[split.task_index]
        if not torch.equal(split.regression_mask(), expected):
            raise ValueError(f"{name} split: its regression mask disagrees with task_types")
    ids, members = membership(subsets, task_names)
    # the per-task sums (k + 1 blocks of (c + b)^2) only for subsets solved on columns
    statistics = per_task_statistics(train, len(task_names), blocks=False)
    example_space = example_space_rows(statistics, members)
    in_examples = int(example_space.sum())
    counts = members.sum(dim=1)
    # Subsets in order of size, so that a batch's systems are not padded to a larger
    # subset's size (each subset's fit is its own: the order changes no value).
    order = torch.argsort(counts, stable=True)
    exact_sizes = exact_system_sizes(statistics, members, example_space)
    # each subset in its own metric: per-task column sums, no compressed curvature (its
    # directions are those of the fixed metric)
    squared = (task_squared_gradients(train, len(task_names))
               if settings.step_scale == "subset" else None)
    compressing = squared is None and settings.curvature_tolerance > 0 and bool(
        may_compress(exact_sizes, example_space).any()
    )
    # The Gram serves the exact solves of the subsets on their examples and the
    # compressed curvature (its tasks' own blocks).
    gram = (TrainingGram(train, len(task_names), memory_mb)
            if in_examples or compressing else None)
    curvature, compressed = None, torch.zeros_like(example_space)
    if compressing:
        curvature = compress_curvature(gram, settings.l2, settings.curvature_tolerance,
                                       memory_mb)
    if curvature is not None:
        holding = member_lists(members)
        compressed = compressed_rows(curvature, holding, exact_sizes, example_space)
        if curvature.pair_bytes(holding[compressed]) > memory_mb * 10**6:
            # the blocks of the pairs these subsets hold would not fit: solved exactly
            curvature, compressed = None, torch.zeros_like(example_space)
    on_columns = ~example_space & ~compressed
    if on_columns.any():
        statistics = with_task_sums(statistics, train)
    # A batch holds (s, r, r) systems: the column solves' (r = c + m b) if any subset is
    # solved on its columns, else the compressed ones (r = padded q; a subset solved on
    # its examples is solved alone), and at least the (s, d) shifts.
    if on_columns.any():
        system = statistics.reduced_dim(int(counts[on_columns].max()))
    elif compressed.any():
        system = int(padded_size(curvature.subset_ranks(holding[compressed])).max())
    else:
        system = 0
    batch_subsets = subsets_per_batch(max(system, math.isqrt(statistics.dim)), memory_mb)
    losses, accuracies, relatives = [], [], []
    for start in range(0, len(ids), batch_subsets):
        block = members[order[start : start + batch_subsets]]
        scales = None if squared is None else subset_step_scales(
            squared, statistics.counts, member_lists(block)
        )
        weights = fit_shifts(
            train, block, settings.l2, settings.newton_steps, statistics=statistics,
            flow_steps=settings.flow_steps, gram=gram, curvature=curvature, scales=scales,
        )
        relative = torch.full((block.shape[0],), float("nan"), dtype=torch.float64)
        if shift_norm is not None and theta_norm:
            norms = shift_norm(weights).double()
            weights, norms = cap_shifts(
                weights, norms, theta_norm, settings.max_relative_shift
            )
            relative = (norms / theta_norm).cpu()
        loss, accuracy = linearized_values(
            val, weights, block.to(val.z.device), metrics, task_names, only_members=True
        )
        losses.append(loss.cpu())
        accuracies.append(accuracy.cpu())
        relatives.append(relative)
    loss, accuracy, relative = (
        torch.empty_like(values).index_copy_(0, order, values)
        for values in (torch.cat(losses), torch.cat(accuracies), torch.cat(relatives))
    )
    table = member_values_table(ids, members, task_names, loss, accuracy, relative)
    if task_scales is not None:
        table = scale_changes(table, task_scales, base_losses(val, task_names))
    elapsed = time.perf_counter() - started
    shifts = relative.numpy()
    if curvature is not None:
        kept = curvature.ranks[:-1]
        compression = (f"{int(compressed.sum())} solved on their members' kept curvature "
                       f"directions instead, each task's {int(kept.min())} to "
                       f"{int(kept.max())} (curvature_tolerance "
                       f"{settings.curvature_tolerance:g})")
    elif squared is not None:
        compression = "each subset in its own metric (step_scale subset), none compressed"
    elif gram is not None and settings.curvature_tolerance > 0:
        compression = "curvature not compressed: its cache exceeds the memory budget"
    else:
        compression = "curvature not compressed"
    log.info(
        "estimated %d subsets (d = %d, systems of at most %d columns, %d per batch; %d "
        "with fewer training examples than columns; %s) in %.2f s "
        "(%.0f subsets/s), peak memory of the process %.0f MB; median relative shift %s",
        len(ids), train.z.shape[1], system, batch_subsets,
        in_examples, compression, elapsed,
        len(ids) / max(elapsed, 1e-9),
        peak_memory_mb(),
        f"{np.median(shifts):.4f}" if np.isfinite(shifts).all() else "not computed",
    )
    return table
