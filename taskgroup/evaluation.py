"""Compare groupings on the test metrics of their per-group models."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from taskgroup.groupings import group_keys


def ari_against_planted(grouping: pd.DataFrame, tasks: pd.DataFrame) -> float:
    """Adjusted Rand index of a grouping against the planted groups (NaN if none known)."""
    planted = tasks.set_index("task")["planted_group"]
    if planted.isna().any():
        return float("nan")
    truth = planted.loc[grouping["task"]].to_numpy(dtype=np.int64)
    return float(adjusted_rand_score(truth, grouping["group"].to_numpy()))


def per_task_table(groupings: dict[str, pd.DataFrame], results: pd.DataFrame) -> pd.DataFrame:
    """One row per (grouping, seed, task): grouping, seed, task, cluster, group_key,
    test_loss, test_metric, val_loss, val_metric.

    groupings: name -> grouping table (task, group); results: the group_results tables of
    every trained group, concatenated (one row per group_key, seed, task, split)."""
    wide = results.pivot_table(
        index=["group_key", "seed", "task"], columns="split", values=["loss", "metric"]
    )
    wide.columns = [f"{split}_{value}" for value, split in wide.columns]
    wide = wide.reset_index()
    frames = []
    for name, grouping in groupings.items():
        keyed = group_keys(grouping).rename(columns={"group": "cluster"})
        joined = keyed.merge(wide, on=["group_key", "task"], how="left")
        missing = joined.loc[joined["seed"].isna(), "task"].tolist()
        if missing:
            raise ValueError(f"grouping {name!r}: no group results for tasks {missing[:5]}")
        frames.append(joined.assign(grouping=name))
    columns = [
        "grouping", "seed", "task", "cluster", "group_key",
        "test_loss", "test_metric", "val_loss", "val_metric",
    ]
    table = pd.concat(frames, ignore_index=True)[columns]
    table["seed"] = table["seed"].astype(np.int64)
    return table.sort_values(["grouping", "seed", "task"], ignore_index=True)


def describe_grouping(name: str) -> dict:
    """kind ("clustered", "baseline", "random"), affinity_source and method of a grouping
    name ("<source>-<method>", a baseline name, or "random_<i>")."""
    if "-" in name:
        source, method = name.split("-", 1)
        return {"kind": "clustered", "affinity_source": source, "method": method}
    if name.startswith("random_"):
        return {"kind": "random", "affinity_source": "", "method": "random"}
    return {"kind": "baseline", "affinity_source": "", "method": name}


def _per_seed_means(per_task: pd.DataFrame, name: str) -> pd.Series:
    chosen = per_task[per_task["grouping"] == name]
    return chosen.groupby("seed")["test_metric"].mean()


def _spread(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def summary_table(
    per_task: pd.DataFrame, groupings: dict[str, pd.DataFrame], tasks: pd.DataFrame,
    reference: str = "naive_mtl",
) -> pd.DataFrame:
    """One row per grouping, plus one "random_mean" row averaging the random partitions.

    Columns: grouping, kind, affinity_source, method, n_groups, n_seeds, mean_test_metric
    (mean over training seeds of the mean over tasks), sd_test_metric (standard deviation of
    that mean across seeds; across partitions for random_mean), mean_test_loss,
    mean_val_metric, ari_vs_planted (NaN without planted groups), gain_vs_<reference>
    (mean over seeds of the paired per-seed difference in mean test metric), sd_gain (its
    spread across seeds) and within_spread (|gain| <= sd_gain: the difference is not
    distinguishable from seed noise; NA with one seed or without the reference)."""
    reference_means = (
        _per_seed_means(per_task, reference) if reference in groupings else None
    )
    rows = []
    for name, grouping in groupings.items():
        chosen = per_task[per_task["grouping"] == name]
        means = _per_seed_means(per_task, name)
        row = {
            "grouping": name,
            **describe_grouping(name),
            "n_groups": int(grouping["group"].nunique()),
            "n_seeds": int(len(means)),
            "mean_test_metric": float(means.mean()),
            "sd_test_metric": _spread(means),
            "mean_test_loss": float(chosen["test_loss"].mean()),
            "mean_val_metric": float(chosen["val_metric"].mean()),
            "ari_vs_planted": ari_against_planted(grouping, tasks),
        }
        if reference_means is not None:
            paired = (means - reference_means).dropna()
            row[f"gain_vs_{reference}"] = float(paired.mean())
            row["sd_gain"] = _spread(paired)
        rows.append(row)
    summary = pd.DataFrame(rows)
    random_rows = summary[summary["kind"] == "random"]
    if len(random_rows):
        pooled = {
            "grouping": "random_mean",
            "kind": "random_mean",
            "affinity_source": "",
            "method": "random",
            "n_groups": int(random_rows["n_groups"].iloc[0]),
            "n_seeds": int(random_rows["n_seeds"].iloc[0]),
            "mean_test_metric": float(random_rows["mean_test_metric"].mean()),
            "sd_test_metric": _spread(random_rows["mean_test_metric"]),
            "mean_test_loss": float(random_rows["mean_test_loss"].mean()),
            "mean_val_metric": float(random_rows["mean_val_metric"].mean()),
            "ari_vs_planted": float(random_rows["ari_vs_planted"].mean()),
        }
        if reference_means is not None:
            gains = random_rows[f"gain_vs_{reference}"]
            pooled[f"gain_vs_{reference}"] = float(gains.mean())
            pooled["sd_gain"] = _spread(gains)
        summary = pd.concat([summary, pd.DataFrame([pooled])], ignore_index=True)
    if reference_means is not None:
        gain, spread = summary[f"gain_vs_{reference}"], summary["sd_gain"]
        within = (gain.abs() <= spread).astype("boolean")
        within[spread.isna() | (summary["grouping"] == reference)] = pd.NA
        summary["within_spread"] = within
    return summary
