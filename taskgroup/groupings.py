"""Groupings of tasks (partitions) to train one model per group: baselines and scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd

BASELINES = ("naive_mtl", "stl", "planted")


def baseline_grouping(name: str, tasks: pd.DataFrame) -> pd.DataFrame:
    """The grouping table (task, group) of a baseline.

    naive_mtl: every task in one group; stl: one group per task; planted: the dataset's
    planted groups (an oracle, only for synthetic data).
    """
    ordered = tasks.sort_values("task_index")
    if name == "naive_mtl":
        groups = np.zeros(len(ordered), dtype=np.int64)
    elif name == "stl":
        groups = np.arange(len(ordered), dtype=np.int64)
    elif name == "planted":
        if ordered["planted_group"].isna().any():
            raise ValueError("grouping 'planted' needs planted groups; this dataset has none")
        groups = ordered["planted_group"].to_numpy(dtype=np.int64)
    else:
        raise ValueError(f"unknown baseline grouping {name!r}; expected one of {BASELINES}")
    return pd.DataFrame({"task": ordered["task"].to_numpy(), "group": groups})
