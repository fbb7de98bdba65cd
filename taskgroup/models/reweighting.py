"""SVD-based task reweighting (Wu, Zhang and Re, ICLR 2020, section 2.4, Algorithm 2).

For the tasks S being trained together, each task i gets a vector theta_i in R^p from its
training examples, the tasks' vectors are stacked into Theta = [theta_1 .. theta_|S|]
(p x |S|), and a task's raw weight is the norm of its projection onto the top-r left
singular vectors U_r of Theta:

    alpha_i = || U_r^T theta_i ||,

the paper's alpha_i = ||theta_i^T U_r||. A task whose vector lies mostly outside the
principal subspace that the tasks share (its labels are noisy, so its X^T y is small and
points away from the others) gets a small weight.

theta_i (the paper's X^T y_i, for tasks that may have different inputs): the per-task
cross-covariance of inputs and labels over the task's training examples,

    theta_i = (1 / m_i) sum_j (x_j - mean_i x) (y~_j - mean_i y~),

with y~ = 2 y - 1 (the +-1 encoding) for binary tasks and y~ = y for regression tasks.
Dividing by m_i makes the vector an estimate of Cov(x, y) that does not grow with the
task's size (the paper's tasks share one X, so its unnormalized X^T y_i compares like with
like; ours need not); centering removes the part of X^T y that only reflects the class
balance and the feature means. For binary labels, centering makes the +-1 and the 0/1
encodings equivalent up to the factor 2 that the normalization below removes. The vectors
are computed on the raw input features, not on trunk features: Algorithm 2 is stated for the
inputs X of the shared module, and the trunk of a model trained from scratch has no
meaningful features before training, when the weights are needed.

Rank: r = min(rank, |S|, p); with r = rank(Theta) every alpha_i = ||theta_i||.

Weights in the loss: the raw weights are normalized to mean 1 over the trained tasks,
w_i = |S| alpha_i / sum_j alpha_j (all 1 when every alpha is 0), and the minibatch loss
becomes the per-example weighted mean (1 / |B|) sum_{x in B} w_task(x) loss(x): with
balanced tasks its expected scale, and so Adam's effective step, is unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from taskgroup.data.examples import TaskData
from taskgroup.data.tables import TASK_WEIGHTS

WEIGHTS = TASK_WEIGHTS  # the task-weights table's columns


def task_vectors(data: TaskData, task_indices: torch.Tensor) -> np.ndarray:
    """Theta (p, |S|) in the order of ``task_indices``: each column the task's centered
    cross-covariance of inputs and (+-1 encoded, for binary tasks) labels over its training
    examples (see the module docstring). A task without training examples is an error."""
    train = data.splits["train"]
    features = train.features.detach().cpu().double()
    labels = train.labels.detach().cpu().double()
    task_index = train.task_index.detach().cpu()
    regression = (
        torch.zeros_like(labels, dtype=torch.bool)
        if train.regression is None
        else train.regression.detach().cpu()
    )
    encoded = torch.where(regression, labels, 2.0 * labels - 1.0)
    columns = []
    for index in task_indices.tolist():
        rows = task_index == index
        if not bool(rows.any()):
            raise ValueError(f"task {data.task_names[index]!r} has no training examples")
        x = features[rows] - features[rows].mean(dim=0)
        y = encoded[rows] - encoded[rows].mean()
        columns.append((x.T @ y / rows.sum()).numpy())
    return np.stack(columns, axis=1)


def svd_weights(theta: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Raw weights alpha (|S|,), the singular values of ``theta`` (descending) and the rank
    r used: alpha_i = ||U_r^T theta_i|| (Algorithm 2)."""
    if rank < 1:
        raise ValueError(f"reweighting rank must be at least 1, got {rank}")
    left, singular, _ = np.linalg.svd(theta, full_matrices=False)
    r = min(int(rank), singular.size)
    alpha = np.linalg.norm(left[:, :r].T @ theta, axis=0)
    return alpha, singular, r


def normalize_weights(alpha: np.ndarray) -> np.ndarray:
    """Weights with mean 1 over the tasks, proportional to ``alpha`` (all 1 if alpha is 0)."""
    total = float(alpha.sum())
    if not np.isfinite(total) or total <= 0:
        return np.ones_like(alpha)
    return alpha * (alpha.size / total)


def task_weights(data: TaskData, task_indices: torch.Tensor, rank: int) -> pd.DataFrame:
    """The task-weights table of the tasks ``task_indices``: task, weight (normalized, mean
    1), alpha (raw, ||U_r^T theta_i||), theta_norm (||theta_i||), rank (r used), component
    (the row's position j = 0, 1, ..) and singular_value (the j-th largest singular value of
    Theta, NaN for j >= min(p, |S|))."""
    theta = task_vectors(data, task_indices)
    alpha, singular, r = svd_weights(theta, rank)
    n = len(task_indices)
    values = np.full(n, np.nan)
    values[: min(n, singular.size)] = singular[:n]
    return pd.DataFrame(
        {
            "task": [data.task_names[i] for i in task_indices.tolist()],
            "weight": normalize_weights(alpha),
            "alpha": alpha,
            "theta_norm": np.linalg.norm(theta, axis=0),
            "rank": np.full(n, r, dtype=np.int64),
            "component": np.arange(n, dtype=np.int64),
            "singular_value": values,
        }
    )


def weight_vector(table: pd.DataFrame, data: TaskData, device=None) -> torch.Tensor:
    """The (n_tasks,) float32 tensor of loss weights in the canonical task order: the
    table's weight for its tasks, 1 for the others (they are not trained)."""
    weights = torch.ones(data.n_tasks, dtype=torch.float32)
    index = data.task_indices(table["task"].tolist())
    weights[index] = torch.tensor(table["weight"].to_numpy(), dtype=torch.float32)
    return weights if device is None else weights.to(device)
