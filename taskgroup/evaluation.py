"""Compare groupings on the test metrics of their per-group models."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score


def ari_against_planted(grouping: pd.DataFrame, tasks: pd.DataFrame) -> float:
    """Adjusted Rand index of a grouping against the planted groups (NaN if none known)."""
    planted = tasks.set_index("task")["planted_group"]
    if planted.isna().any():
        return float("nan")
    truth = planted.loc[grouping["task"]].to_numpy(dtype=np.int64)
    return float(adjusted_rand_score(truth, grouping["group"].to_numpy()))


def per_task_table(group_results: list[pd.DataFrame]) -> pd.DataFrame:
    """One row per (grouping, task): grouping, task, cluster, test_loss, test_metric,
    val_loss, val_metric, from the group_results tables of every trained group model."""
    combined = pd.concat(group_results, ignore_index=True)
    wide = combined.pivot_table(
        index=["grouping", "task", "group"], columns="split", values=["loss", "metric"]
    )
    wide.columns = [f"{split}_{value}" for value, split in wide.columns]
    wide = wide.reset_index().rename(columns={"group": "cluster"})
    duplicated = wide.duplicated(["grouping", "task"])
    if duplicated.any():
        first = wide.loc[duplicated, ["grouping", "task"]].iloc[0].tolist()
        raise ValueError(f"task trained in two groups of one grouping: {first}")
    columns = ["grouping", "task", "cluster", "test_loss", "test_metric", "val_loss", "val_metric"]
    return wide[columns].sort_values(["grouping", "task"], ignore_index=True)


def summary_table(
    per_task: pd.DataFrame, groupings: dict[str, pd.DataFrame], tasks: pd.DataFrame
) -> pd.DataFrame:
    """One row per grouping: grouping, n_groups, mean_test_loss, mean_test_metric,
    mean_val_metric, ari_vs_planted (NaN without planted groups)."""
    rows = []
    for name, grouping in groupings.items():
        chosen = per_task[per_task["grouping"] == name]
        missing = sorted(set(grouping["task"]) - set(chosen["task"]))
        if missing:
            raise ValueError(f"grouping {name!r}: no results for tasks {missing[:5]}")
        rows.append(
            {
                "grouping": name,
                "n_groups": int(grouping["group"].nunique()),
                "mean_test_loss": float(chosen["test_loss"].mean()),
                "mean_test_metric": float(chosen["test_metric"].mean()),
                "mean_val_metric": float(chosen["val_metric"].mean()),
                "ari_vs_planted": ari_against_planted(grouping, tasks),
            }
        )
    return pd.DataFrame(rows)
