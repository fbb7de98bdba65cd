"""Higher-order task affinity from per-subset values (KDD 2023, eq. 1).

T_ij = mean of f_i(S) over the sampled subsets S that contain both i and j; T_ii = mean over
subsets containing i. Losses are "lower is better", so the normalized matrix flips the sign,
z-scores each target task's values across its subsets and symmetrizes:

    N_ij = -(T_ij - mu_i) / sigma_i,    normalized = (N + N^T) / 2,

where mu_i and sigma_i are the mean and standard deviation of f_i(S) over subsets with i.
Pairs that no subset covers (n_ij = 0) have NaN raw and normalized values.

The pairwise transfer f_i({i, j}) - f_i({i}) of the singletons-and-pairs design
(:func:`transfer_matrices`) feeds both the pairwise affinity (:func:`pairwise_matrices`) and
the ground truth of the surrogates' negative-transfer calls
(:func:`taskgroup.group.surrogates.pairwise_transfer`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from taskgroup.data.designs import membership_matrix
from taskgroup.data.tables import check_columns

# The columns of a subset-values table that the pair design's transfer reads (the full
# schema is taskgroup.data.tables.SUBSET_VALUES).
VALUE_COLUMNS = {"subset_id": "int", "task": "str", "split": "str", "loss": "float"}


def check_one_design(frame: pd.DataFrame, columns: dict[str, str], source: str) -> None:
    """Raise ValueError naming ``source`` if a column of ``columns`` is missing or mistyped,
    or if an optional ``design`` column holds several designs (subset ids restart per
    design, so the rows of one design must be passed)."""
    check_columns(frame, columns, source)
    if "design" in frame.columns and frame["design"].nunique() > 1:
        raise ValueError(
            f"{source}: rows of several designs {sorted(frame['design'].unique())}; subset ids "
            f"are per design, so pass the rows of one design"
        )


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


def transfer_matrices(
    values: pd.DataFrame, task_names: list[str], split: str = "val", every_pair: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairwise transfer f_i({i, j}) - f_i({i}) from the losses of the pair design.

    values: long subset-values table (subset_id, task, split, loss; an optional ``design``
    column must hold one design) in which each subset's members are the tasks with rows for
    it. Only subsets of one task ({i}) and two tasks ({i, j}) are used; larger subsets are
    ignored.
    Repeated subsets: every ``split`` loss of task i on {i} (on {i, j}) counts, and
    f_i({i}) (f_i({i, j})) is their mean; so a subset trained more than once (several
    subset_ids with the same members) contributes the mean of its losses.

    Returns (alone, together, transfer): alone (k,) = f_i({i}); together (k, k) =
    f_i({i, j}) at [i, j]; transfer (k, k) = together - alone[:, None] (loss units; > 0 =
    task j hurts task i); both (k, k) NaN on the diagonal; rows and columns in the order of
    ``task_names``. ``every_pair``: the design holds every pair, and a pair without losses
    is an error; False (a sampled pair design,
    :func:`taskgroup.data.designs.sampled_pairs`): the pairs it lacks are NaN in
    ``together`` and ``transfer``. Raises ValueError when there is no ``split`` row, when a
    task is not one of ``task_names``, and naming the missing singletons (always needed)
    and, with ``every_pair``, the missing pairs.
    """
    check_one_design(values, VALUE_COLUMNS, "subset values")
    chosen = values[values["split"] == split]
    if chosen.empty:
        raise ValueError(f"subset values: no rows with split == {split!r}")
    unknown = sorted(set(chosen["task"]) - set(task_names))
    if unknown:
        raise ValueError(f"subset values name tasks {unknown[:5]} that the dataset does not have")
    size = chosen.groupby("subset_id")["task"].transform("nunique")
    alone = chosen[size == 1].groupby("task")["loss"].mean()
    pairs = chosen[size == 2]
    partner = pairs.merge(
        pairs[["subset_id", "task"]].rename(columns={"task": "source"}), on="subset_id"
    )
    partner = partner[partner["task"] != partner["source"]]
    k = len(task_names)
    together = np.where(
        np.eye(k, dtype=bool),
        np.nan,
        partner.groupby(["task", "source"])["loss"].mean().unstack()
        .reindex(index=task_names, columns=task_names)
        .to_numpy(dtype=float),
    )
    alone = alone.reindex(task_names).to_numpy(dtype=float)
    missing_single = [name for name, loss in zip(task_names, alone) if np.isnan(loss)]
    gaps = np.argwhere(np.isnan(together) & ~np.eye(k, dtype=bool) & every_pair)
    if missing_single or len(gaps):
        parts = []
        if missing_single:
            parts.append(
                f"{len(missing_single)} singleton(s) without a {split!r} loss, e.g. "
                f"{missing_single[:5]}"
            )
        if len(gaps):
            missing_pair = sorted({tuple(sorted((task_names[i], task_names[j])))
                                   for i, j in gaps})
            i, j = gaps[0]
            parts.append(
                f"{len(missing_pair)} pair(s) without {split!r} losses of both members, e.g. "
                f"{missing_pair[:5]} (no value for {task_names[i]} trained with "
                f"{task_names[j]})"
            )
        needs = "every singleton and pair" if every_pair else "every singleton"
        raise ValueError(f"pairwise transfer needs the pair design ({needs}): " + "; ".join(parts))
    return alone, together, together - alone[:, None]


def pairwise_matrices(
    values: pd.DataFrame, task_names: list[str], every_pair: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Raw pairwise transfer R (k, k) and its normalization N (k, k) from the validation
    losses of the singletons-and-pairs design.

    R_ij = f_i({i, j}) - f_i({i}) for i != j (``transfer_matrices``, whose rule for repeated
    subsets, ``every_pair`` and errors apply; loss units; negative = task j helps task i),
    R_ii = 0. N flips the sign, z-scores each target's row over its pairs j != i,
    symmetrizes and sets the diagonal to 0, like the higher-order normalization. With a
    sampled pair design (``every_pair`` False) the unsampled pairs are NaN in R and N:
    missing, not zero (the clustering counts NaN as the neutral 0 of a z-score).
    """
    _, _, transfer = transfer_matrices(values, task_names, every_pair=every_pair)
    off_diagonal = ~np.eye(len(task_names), dtype=bool)
    raw = np.where(off_diagonal, transfer, 0.0)
    flipped = np.where(off_diagonal, -raw, np.nan)
    with warnings.catch_warnings():
        # a task in no sampled pair has an all-NaN row: its mean and spread are NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(flipped, axis=1, keepdims=True)
        spread = np.nanstd(flipped, axis=1, keepdims=True)
    directed = (flipped - mean) / np.where(spread > 0, spread, 1.0)
    normalized = (directed + directed.T) / 2.0
    normalized[~off_diagonal] = 0.0
    return raw, normalized


def pairwise_affinity_table(
    values: pd.DataFrame, task_names: list[str], every_pair: bool = True
) -> pd.DataFrame:
    """The long pairwise affinity table; n_subsets is 1 (the pair, or the singleton) and 0
    for the pairs a sampled design (``every_pair`` False) lacks, whose raw and normalized
    values are NaN."""
    raw, normalized = pairwise_matrices(values, task_names, every_pair=every_pair)
    counts = np.where(np.isnan(raw), 0, 1).astype(np.int64)
    return long_table(raw, normalized, counts, task_names)
