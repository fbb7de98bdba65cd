"""Groupings of tasks (partitions) to train one model per group: baselines and scoring."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

BASELINES = ("naive_mtl", "stl", "planted")


def check_n_clusters(n_clusters: int, k: int) -> None:
    """Raise ValueError, naming the config key clustering.n_clusters, unless
    1 <= n_clusters <= k: a partition of k tasks has between 1 and k groups."""
    if n_clusters > k:
        raise ValueError(
            f"clustering.n_clusters = {n_clusters} exceeds the number of tasks k = {k} "
            f"(it must lie between 1 and k)"
        )
    if n_clusters < 1:
        raise ValueError(
            f"clustering.n_clusters = {n_clusters} is below 1 (it must lie between 1 and the "
            f"number of tasks k = {k})"
        )


def baseline_partition(name: str, tasks: pd.DataFrame) -> pd.DataFrame:
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


def random_partition(reference: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A grouping table (task, group) with the same group sizes as ``reference``, tasks
    assigned to groups uniformly at random (a seeded permutation). Groups are numbered by
    size as in ``reference``, so sizes match group by group."""
    ordered = reference.sort_values("task", ignore_index=True)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(ordered["group"].to_numpy(dtype=np.int64))
    return pd.DataFrame({"task": ordered["task"].to_numpy(), "group": shuffled})


def group_key(members) -> str:
    """A stable 16-hex-digit name for a set of task names (order does not matter).

    Group models are trained once per distinct set of tasks: two groupings that share a
    group (e.g. a cluster that equals a planted group) share its model."""
    joined = "\n".join(sorted(str(member) for member in members))
    return hashlib.sha1(joined.encode()).hexdigest()[:16]


def group_keys(grouping: pd.DataFrame) -> pd.DataFrame:
    """One row per task: task, group, group_key (the key of the task's group's members)."""
    keys = grouping.groupby("group")["task"].apply(group_key)
    table = grouping[["task", "group"]].copy()
    table["group_key"] = keys.loc[table["group"]].to_numpy()
    return table


def adjusted_rand_index(labels_a, labels_b) -> float:
    """The adjusted Rand index of two labelings of the same n items (sequences of n
    hashable labels; the label values do not matter, only which items share one): 1 for
    identical partitions, about 0 for independent ones, negative below chance.

    Counted over pairs of items: with tp pairs together in both, fn together in a only, fp
    together in b only and tn apart in both, ARI = 2 (tp tn - fn fp) / ((tp + fn)(fn + tn) +
    (tp + fp)(fp + tn)), and 1 when no pair disagrees (fn = fp = 0, e.g. both partitions
    of singletons). Computed here rather than by scikit-learn, whose import costs the jobs
    that only compare groupings a couple of CPU seconds. Raises ValueError when the lengths
    differ."""
    labels_a, labels_b = np.asarray(labels_a), np.asarray(labels_b)
    if labels_a.shape != labels_b.shape or labels_a.ndim != 1:
        raise ValueError(
            f"labelings of different shapes: {labels_a.shape} and {labels_b.shape}"
        )
    n = len(labels_a)
    _, a = np.unique(labels_a, return_inverse=True)
    _, b = np.unique(labels_b, return_inverse=True)
    table = np.zeros((a.max(initial=-1) + 1, b.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    # ordered pairs of distinct items (every count doubled, which the ratio cancels)
    together = int((table**2).sum()) - n
    in_a = int((table.sum(axis=1) ** 2).sum()) - n
    in_b = int((table.sum(axis=0) ** 2).sum()) - n
    tp, fn, fp = together, in_a - together, in_b - together
    tn = n * (n - 1) - tp - fn - fp
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
