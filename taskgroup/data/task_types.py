"""Task types and the metric names that fit them (no torch: the config check at parse time
uses this module). The losses and metrics themselves are in :mod:`taskgroup.models.metrics`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

TASK_TYPES = ("binary", "regression")
METRICS = ("auto", "accuracy", "roc_auc", "average_precision", "r2")
METRIC_TASK_TYPES = {
    "accuracy": "binary",
    "roc_auc": "binary",
    "average_precision": "binary",
    "r2": "regression",
}
AUTO_METRIC = {"binary": "accuracy", "regression": "r2"}
METRIC_KEY = "evaluation.metric"


def check_metric(metric: str, task_types: Mapping[str, str] | Iterable[str]) -> None:
    """Raise ValueError, naming ``evaluation.metric`` and a task, if ``metric`` is unknown or
    does not fit a task's type. ``task_types``: task name -> type, or the types alone."""
    if metric not in METRICS:
        raise ValueError(f"config: {METRIC_KEY} = {metric!r}; expected one of {list(METRICS)}")
    items = (
        task_types.items() if isinstance(task_types, Mapping) else
        ((None, kind) for kind in task_types)
    )
    for task, kind in items:
        if kind not in TASK_TYPES:
            name = "" if task is None else f" of task {task!r}"
            raise ValueError(f"task_type{name} is {kind!r}; expected one of {list(TASK_TYPES)}")
        if metric != "auto" and METRIC_TASK_TYPES[metric] != kind:
            name = "a task" if task is None else f"task {task!r}"
            raise ValueError(
                f"config: {METRIC_KEY} = {metric!r} applies to {METRIC_TASK_TYPES[metric]} "
                f"tasks only, but {name} is a {kind} task (use 'auto', or "
                f"{[m for m, t in METRIC_TASK_TYPES.items() if t == kind]} for {kind} tasks)"
            )


def resolve_metrics(metric: str, task_types: Sequence[str], task_names: Sequence[str]):
    """The metric of every task (list, in task order) under the configured ``metric``,
    after :func:`check_metric`."""
    check_metric(metric, dict(zip(task_names, task_types)))
    return [AUTO_METRIC[kind] if metric == "auto" else metric for kind in task_types]
