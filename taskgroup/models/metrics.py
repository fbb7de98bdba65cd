"""Task types, their losses, and the per-task evaluation metrics.

A task is "binary" (labels 0/1, the head's output is a logit) or "regression" (real labels,
the head's output is the prediction), as the tasks table's task_type column says. Losses,
per example, selected by the example's task type:

- binary: binary cross-entropy with logits, in nats,
  BCE(y, f) = -y log sigmoid(f) - (1 - y) log(1 - sigmoid(f));
- regression: squared error (f - y)^2, in label units squared (its mean over a task's
  examples is the mean squared error; no factor 1/2).

Metrics (config key ``evaluation.metric``; higher is better for every one):

- ``accuracy`` (binary): share of examples with (f > 0) == y;
- ``roc_auc`` (binary): area under the ROC curve of the scores f, ties counted half (equal to
  scikit-learn's ``roc_auc_score``);
- ``average_precision`` (binary): sum over distinct score thresholds, from the highest, of
  (recall increase) x precision (equal to scikit-learn's ``average_precision_score``);
- ``r2`` (regression): 1 - sum (y - f)^2 / sum (y - mean y)^2 over the task's examples of
  the split (scikit-learn's ``r2_score``, except that constant labels give NaN);
- ``auto`` (the default): accuracy for binary tasks, r2 for regression tasks.

A metric that is undefined for a task in a split (only one class for roc_auc and
average_precision, constant labels for r2) is NaN, with a logged warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from taskgroup.data.task_types import (  # noqa: F401  (re-exported)
    AUTO_METRIC,
    METRIC_KEY,
    METRIC_TASK_TYPES,
    METRICS,
    TASK_TYPES,
    check_metric,
    resolve_metrics,
)

log = logging.getLogger(__name__)


def example_losses(
    outputs: torch.Tensor, labels: torch.Tensor, regression: torch.Tensor | None
) -> torch.Tensor:
    """Per-example loss, same shape as ``outputs``: squared error where ``regression`` (a
    boolean mask broadcastable to ``outputs``) is true, binary cross-entropy with logits
    elsewhere. ``labels`` broadcasts against ``outputs``; ``regression`` None = all binary."""
    labels = labels.to(outputs.dtype).expand_as(outputs)
    binary = F.binary_cross_entropy_with_logits(outputs, labels, reduction="none")
    if regression is None:
        return binary
    return torch.where(regression.expand_as(outputs), (outputs - labels) ** 2, binary)


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return ((outputs > 0) == (labels[:, None] > 0.5)).mean(axis=0)


def _r2(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    total = ((labels - labels.mean()) ** 2).sum()
    if total == 0:
        return np.full(outputs.shape[1], np.nan)
    return 1.0 - ((labels[:, None] - outputs) ** 2).sum(axis=0) / total


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of the rows of ``values`` (n,) or (n, s), per column, tied values getting
    the mean of the ranks they span (as scipy.stats.rankdata; written here because importing
    scipy.stats costs each training job seconds of start-up)."""
    values = np.asarray(values)
    columns = values.reshape(values.shape[0], -1)
    ranks = np.empty(columns.shape, dtype=np.float64)
    for column in range(columns.shape[1]):
        _, inverse, counts = np.unique(columns[:, column], return_inverse=True, return_counts=True)
        last = np.cumsum(counts)  # rank of the last row holding each distinct value
        ranks[:, column] = (last - (counts - 1) / 2.0)[inverse.reshape(-1)]
    return ranks.reshape(values.shape)


def _roc_auc(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    positive = labels > 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    ranks = average_ranks(outputs)  # average ranks: ties count half
    return (ranks[positive].sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _average_precision(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    positive = (labels > 0.5).astype(np.float64)
    n = outputs.shape[0]
    order = np.argsort(-outputs, axis=0, kind="stable")
    scores = np.take_along_axis(outputs, order, axis=0)
    hits = positive[order]  # (n, s)
    true_positives = np.cumsum(hits, axis=0)
    # Precision is read at the last example of each run of tied scores (one threshold).
    last = np.ones_like(scores, dtype=bool)
    last[:-1] = scores[:-1] != scores[1:]
    end = np.where(last, np.arange(n)[:, None], n)
    end = np.minimum.accumulate(end[::-1], axis=0)[::-1]  # the run's last position
    precision = np.take_along_axis(true_positives, end, axis=0) / (end + 1)
    return (hits * precision).sum(axis=0) / positive.sum()


_FUNCTIONS = {
    "accuracy": _accuracy,
    "r2": _r2,
    "roc_auc": _roc_auc,
    "average_precision": _average_precision,
}


def per_task_metric(
    outputs, labels, task_index, metrics: Sequence[str], task_names: Sequence[str] | None = None,
    context: str = "",
) -> np.ndarray:
    """The metric (k, s) of every task under s sets of outputs.

    outputs (n,) or (n, s) (logits for binary tasks, predictions for regression), labels (n,),
    task_index (n,), ``metrics`` the metric name of each of the k tasks (see
    :func:`resolve_metrics`). Tasks without examples get NaN silently; tasks whose metric is
    undefined (one class, constant labels) get NaN with a warning naming the task and
    ``context`` (e.g. the split)."""
    as_numpy = [x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
                for x in (outputs, labels, task_index)]
    outputs, labels, task_index = as_numpy
    outputs = outputs.astype(np.float64).reshape(outputs.shape[0], -1)
    labels = labels.astype(np.float64)
    result = np.full((len(metrics), outputs.shape[1]), np.nan)
    order = np.argsort(task_index, kind="stable")
    starts = np.searchsorted(task_index[order], np.arange(len(metrics) + 1))
    for task, metric in enumerate(metrics):
        rows = order[starts[task] : starts[task + 1]]
        if rows.size == 0:
            continue
        y = labels[rows]
        if metric in ("roc_auc", "average_precision") and np.unique(y > 0.5).size < 2:
            undefined = "only one class"
        elif metric == "r2" and np.all(y == y[0]):
            undefined = "constant labels"
        else:
            result[task] = _FUNCTIONS[metric](outputs[rows], y)
            continue
        name = task if task_names is None else task_names[task]
        log.warning(
            "%s of task %r is undefined%s (%s): NaN", metric, name,
            f" in {context}" if context else "", undefined,
        )
    return result
