"""Higher-order task affinity from per-subset values (KDD 2023, eq. 1).

T_ij = mean of f_i(S) over the sampled subsets S that contain both i and j; T_ii = mean over
subsets containing i. Losses are "lower is better", so the normalized matrix flips the sign,
z-scores each target task's values across its subsets and symmetrizes:

    N_ij = -(T_ij - mu_i) / sigma_i,    normalized = (N + N^T) / 2,

where mu_i and sigma_i are the mean and standard deviation of f_i(S) over subsets with i.
Pairs that no subset covers (n_ij = 0) have NaN raw and normalized values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskgroup.data.designs import membership_matrix


def value_matrix(values: pd.DataFrame, task_names: list[str], split: str = "val") -> tuple[
    np.ndarray, np.ndarray
]:
    """Membership (n_subsets, k) bool and loss (n_subsets, k) float with NaN off-membership."""
    chosen = values[values["split"] == split]
    if chosen.empty:
        raise ValueError(f"subset values: no rows with split == {split!r}")
    membership = membership_matrix(chosen[["subset_id", "task"]], task_names)
    ids = np.sort(chosen["subset_id"].unique())
    losses = (
        chosen.pivot_table(index="subset_id", columns="task", values="loss", aggfunc="first")
        .reindex(index=ids, columns=task_names)
        .to_numpy(dtype=float)
    )
    return membership, losses


def affinity_matrices(
    membership: np.ndarray, losses: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw T (k, k), normalized N (k, k) and pair counts n (k, k) from per-subset losses.

    membership: (m, k) bool; losses: (m, k) with the loss of task i after training on
    subset r at [r, i] (ignored where membership is False).
    """
    inside = membership.astype(float)
    filled = np.where(membership, losses, 0.0)
    if np.isnan(filled).any():
        raise ValueError("subset values: a member task of a subset has no loss (NaN)")
    counts = (inside.T @ inside).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.where(counts > 0, (filled.T @ inside) / counts, np.nan)
        per_task = counts.diagonal()
        mean = np.where(per_task > 0, filled.sum(axis=0) / per_task, np.nan)
        second = np.where(per_task > 0, (filled**2).sum(axis=0) / per_task, np.nan)
    spread = np.sqrt(np.maximum(second - mean**2, 0.0))
    spread = np.where(spread > 0, spread, 1.0)
    directed = -(raw - mean[:, None]) / spread[:, None]
    normalized = (directed + directed.T) / 2.0
    return raw, normalized, counts


def affinity_table(values: pd.DataFrame, task_names: list[str]) -> pd.DataFrame:
    """The long affinity table (task_i, task_j, n_subsets, raw, normalized) from validation
    losses in the subset_values table."""
    membership, losses = value_matrix(values, task_names)
    raw, normalized, counts = affinity_matrices(membership, losses)
    return long_table(raw, normalized, counts, task_names)


def square(table: pd.DataFrame, task_names: list[str], column: str) -> np.ndarray:
    """The (k, k) matrix of ``column`` from a long affinity table, rows/cols in task order."""
    return (
        table.pivot(index="task_i", columns="task_j", values=column)
        .reindex(index=task_names, columns=task_names)
        .to_numpy(dtype=float)
    )


def long_table(
    raw: np.ndarray, normalized: np.ndarray, counts: np.ndarray, task_names: list[str]
) -> pd.DataFrame:
    """The long affinity table (task_i, task_j, n_subsets, raw, normalized) of (k, k)
    matrices in task order."""
    k = len(task_names)
    first, second = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    names = np.asarray(task_names, dtype=object)
    return pd.DataFrame(
        {
            "task_i": names[first.ravel()],
            "task_j": names[second.ravel()],
            "n_subsets": np.asarray(counts, dtype=np.int64).ravel(),
            "raw": np.asarray(raw, dtype=float).ravel(),
            "normalized": np.asarray(normalized, dtype=float).ravel(),
        }
    )


def pairwise_matrices(values: pd.DataFrame, task_names: list[str]) -> tuple[
    np.ndarray, np.ndarray
]:
    """Raw pairwise transfer R (k, k) and its normalization N (k, k) from the validation
    losses of the singletons-and-pairs design.

    R_ij = f_i({i, j}) - f_i({i}) for i != j (loss units; negative = task j helps task i),
    R_ii = 0. N flips the sign, z-scores each target's row over j != i, symmetrizes and sets
    the diagonal to 0, like the higher-order normalization.
    """
    chosen = values[values["split"] == "val"]
    sizes = chosen.groupby("subset_id")["task"].transform("size")
    k = len(task_names)
    index = pd.Series(np.arange(k), index=task_names)
    alone = np.full(k, np.nan)
    singles = chosen[sizes == 1]
    alone[index[singles["task"]].to_numpy()] = singles["loss"].to_numpy()
    paired = np.full((k, k), np.nan)
    pairs = chosen[sizes == 2]
    partner = pairs.groupby("subset_id")["task"].transform(lambda t: t.iloc[::-1].to_numpy())
    paired[index[pairs["task"]].to_numpy(), index[partner].to_numpy()] = pairs["loss"].to_numpy()
    if np.isnan(alone).any():
        missing = [task_names[i] for i in np.flatnonzero(np.isnan(alone))[:5]]
        raise ValueError(f"pairwise affinity: no singleton value for tasks {missing}")
    off_diagonal = ~np.eye(k, dtype=bool)
    if np.isnan(paired[off_diagonal]).any():
        i, j = np.argwhere(np.isnan(paired) & off_diagonal)[0]
        raise ValueError(
            f"pairwise affinity: no value for {task_names[i]} trained with {task_names[j]}"
        )
    raw = np.where(off_diagonal, paired - alone[:, None], 0.0)
    flipped = np.where(off_diagonal, -raw, np.nan)
    mean = np.nanmean(flipped, axis=1, keepdims=True)
    spread = np.nanstd(flipped, axis=1, keepdims=True)
    directed = (flipped - mean) / np.where(spread > 0, spread, 1.0)
    normalized = np.nan_to_num((directed + directed.T) / 2.0, nan=0.0)
    return raw, normalized


def pairwise_affinity_table(values: pd.DataFrame, task_names: list[str]) -> pd.DataFrame:
    """The long pairwise affinity table; n_subsets is 1 (the pair, or the singleton)."""
    raw, normalized = pairwise_matrices(values, task_names)
    counts = np.ones((len(task_names),) * 2, dtype=np.int64)
    return long_table(raw, normalized, counts, task_names)
