"""Load the examples and tasks tables into tensors, checking them on the way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from taskgroup.data.tables import EXAMPLES, SPLITS, TASKS, check_columns, feature_columns
from taskgroup.data.task_types import TASK_TYPES


def regression_mask(regression: torch.Tensor | None, task_index: torch.Tensor) -> torch.Tensor:
    """``regression`` (n,) bool, or all False (n,) when it is None (every task binary)."""
    if regression is None:
        return torch.zeros_like(task_index, dtype=torch.bool)
    return regression


@dataclass
class SplitTensors:
    """All examples of one split: features (n, p) float32, labels (n,) float32 (0/1 for
    binary tasks, real for regression tasks), task_index (n,) int64 into the canonical task
    order, regression (n,) bool: whether the example's task is a regression task (its loss
    is the squared error; None = every task is binary)."""

    features: torch.Tensor
    labels: torch.Tensor
    task_index: torch.Tensor
    regression: torch.Tensor | None = None

    def regression_mask(self) -> torch.Tensor:
        return regression_mask(self.regression, self.task_index)

    def to(self, device: torch.device) -> "SplitTensors":
        return SplitTensors(
            self.features.to(device), self.labels.to(device), self.task_index.to(device),
            None if self.regression is None else self.regression.to(device),
        )

    def select_tasks(self, task_indices: torch.Tensor) -> "SplitTensors":
        """The examples whose task is in ``task_indices`` (1-D int64)."""
        keep = torch.isin(self.task_index, task_indices.to(self.task_index.device))
        return SplitTensors(
            self.features[keep], self.labels[keep], self.task_index[keep],
            None if self.regression is None else self.regression[keep],
        )


@dataclass
class TaskData:
    """The examples of every task, by split, with the canonical task order and each task's
    type ("binary" or "regression"; None = every task is binary)."""

    task_names: list[str]
    splits: dict[str, SplitTensors]
    task_types: list[str] | None = None

    @property
    def types(self) -> list[str]:
        """The type of every task, in task order."""
        return list(self.task_types) if self.task_types else ["binary"] * self.n_tasks

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    @property
    def n_features(self) -> int:
        return self.splits["train"].features.shape[1]

    def task_indices(self, names) -> torch.Tensor:
        """Indices (int64 tensor) of the named tasks; KeyError names an unknown one."""
        lookup = {name: index for index, name in enumerate(self.task_names)}
        unknown = [name for name in names if name not in lookup]
        if unknown:
            raise KeyError(f"unknown task(s) {unknown}; the dataset has {self.task_names}")
        return torch.tensor([lookup[name] for name in names], dtype=torch.int64)

    def to(self, device: torch.device) -> "TaskData":
        return TaskData(
            self.task_names, {k: v.to(device) for k, v in self.splits.items()}, self.task_types
        )


def build_task_data(
    examples: pd.DataFrame, tasks: pd.DataFrame, source: str = "examples table"
) -> TaskData:
    """Check the examples and tasks tables against each other and convert them to tensors."""
    check_columns(examples, EXAMPLES, source)
    check_columns(tasks, TASKS, "tasks table")
    features = feature_columns(examples)
    if not features:
        raise ValueError(f"{source}: no feature columns (names starting with 'feature_')")
    ordered = tasks.sort_values("task_index")
    task_names = ordered["task"].tolist()
    task_types = ordered["task_type"].tolist()
    bad_types = sorted({kind for kind in task_types if kind not in TASK_TYPES})
    if bad_types:
        task = task_names[task_types.index(bad_types[0])]
        raise ValueError(
            f"tasks table: column 'task_type' has {bad_types} (task {task!r}); expected one "
            f"of {list(TASK_TYPES)}"
        )
    unknown = sorted(set(examples["task"]) - set(task_names))
    if unknown:
        raise ValueError(f"{source}: tasks {unknown[:5]} are not in the tasks table")
    bad_splits = sorted(set(examples["split"]) - set(SPLITS))
    if bad_splits:
        raise ValueError(f"{source}: column 'split' has values {bad_splits}, expected {SPLITS}")
    values = examples[features].to_numpy(dtype=np.float32)
    if not np.isfinite(values).all():
        bad = [c for c in features if not np.isfinite(examples[c].to_numpy(float)).all()]
        raise ValueError(f"{source}: NaN or infinite values in feature column(s) {bad}")
    index_of = {name: i for i, name in enumerate(task_names)}
    is_regression = torch.tensor([kind == "regression" for kind in task_types], dtype=torch.bool)
    binary_names = [name for name, kind in zip(task_names, task_types) if kind == "binary"]
    binary_rows = examples["task"].isin(binary_names).to_numpy()
    labels = examples["label"].to_numpy(np.float64)
    if not np.isfinite(labels).all():
        raise ValueError(f"{source}: NaN or infinite values in column 'label'")
    not_01 = binary_rows & (labels != 0) & (labels != 1)
    if not_01.any():
        task = examples.loc[not_01, "task"].iloc[0]
        raise ValueError(
            f"{source}: column 'label' of binary task {task!r} has the value "
            f"{float(labels[not_01][0])!r}; expected 0 or 1"
        )
    splits = {}
    for split in SPLITS:
        rows = (examples["split"] == split).to_numpy()
        task_index = torch.tensor(examples.loc[rows, "task"].map(index_of).to_numpy(np.int64))
        splits[split] = SplitTensors(
            features=torch.from_numpy(values[rows].copy()),
            labels=torch.from_numpy(examples.loc[rows, "label"].to_numpy(np.float32).copy()),
            task_index=task_index,
            regression=is_regression[task_index],
        )
    return TaskData(task_names, splits, task_types)
