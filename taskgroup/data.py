"""Load the examples and tasks tables into tensors, checking them on the way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from taskgroup.tables import EXAMPLES, SPLITS, TASKS, check_columns, feature_columns


@dataclass
class SplitTensors:
    """All examples of one split: features (n, p) float32, labels (n,) float32 in {0, 1},
    task_index (n,) int64 into the canonical task order."""

    features: torch.Tensor
    labels: torch.Tensor
    task_index: torch.Tensor

    def to(self, device: torch.device) -> "SplitTensors":
        return SplitTensors(
            self.features.to(device), self.labels.to(device), self.task_index.to(device)
        )

    def select_tasks(self, task_indices: torch.Tensor) -> "SplitTensors":
        """The examples whose task is in ``task_indices`` (1-D int64)."""
        keep = torch.isin(self.task_index, task_indices.to(self.task_index.device))
        return SplitTensors(self.features[keep], self.labels[keep], self.task_index[keep])


@dataclass
class TaskData:
    """The examples of every task, by split, with the canonical task order."""

    task_names: list[str]
    splits: dict[str, SplitTensors]

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
        return TaskData(self.task_names, {k: v.to(device) for k, v in self.splits.items()})


def build_task_data(
    examples: pd.DataFrame, tasks: pd.DataFrame, source: str = "examples table"
) -> TaskData:
    """Check the examples and tasks tables against each other and convert them to tensors."""
    check_columns(examples, EXAMPLES, source)
    check_columns(tasks, TASKS, "tasks table")
    features = feature_columns(examples)
    if not features:
        raise ValueError(f"{source}: no feature columns (names starting with 'feature_')")
    task_names = tasks.sort_values("task_index")["task"].tolist()
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
    splits = {}
    for split in SPLITS:
        rows = (examples["split"] == split).to_numpy()
        splits[split] = SplitTensors(
            features=torch.from_numpy(values[rows].copy()),
            labels=torch.from_numpy(examples.loc[rows, "label"].to_numpy(np.float32).copy()),
            task_index=torch.tensor(
                examples.loc[rows, "task"].map(index_of).to_numpy(np.int64)
            ),
        )
    return TaskData(task_names, splits)
