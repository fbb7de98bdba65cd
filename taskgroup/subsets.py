"""Random task subsets of a fixed size, and how often each pair of tasks is covered."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from taskgroup.tables import SUBSETS, read_table


def check_subset_design(n_tasks: int, size: int, count: int) -> None:
    """Raise ValueError if ``count`` distinct subsets of ``size`` out of ``n_tasks`` can't exist."""
    if not 1 <= size <= n_tasks:
        raise ValueError(
            f"subsets.size (alpha) = {size} must be between 1 and the number of tasks "
            f"k = {n_tasks}"
        )
    available = math.comb(n_tasks, size)
    if count > available:
        raise ValueError(
            f"subsets.count (m) = {count} exceeds the {available} distinct subsets of size "
            f"{size} out of {n_tasks} tasks; lower subsets.count or change subsets.size"
        )


def sample_subsets(task_names: list[str], size: int, count: int, seed: int) -> pd.DataFrame:
    """Draw ``count`` distinct subsets of ``size`` tasks, uniformly without replacement.

    Returns the long subsets table: one row per (subset_id, task), subset ids 0..count-1 in
    draw order, tasks of a subset in canonical order. Same arguments, same table.
    """
    n_tasks = len(task_names)
    check_subset_design(n_tasks, size, count)
    rng = np.random.default_rng(seed)
    available = math.comb(n_tasks, size)
    if count * 2 > available:
        # Rejection sampling would stall near exhaustion: enumerate and choose instead.
        every = list(itertools.combinations(range(n_tasks), size))
        chosen = [every[i] for i in rng.choice(available, size=count, replace=False)]
    else:
        seen: set[tuple[int, ...]] = set()
        chosen = []
        while len(chosen) < count:
            subset = tuple(sorted(rng.choice(n_tasks, size=size, replace=False).tolist()))
            if subset not in seen:
                seen.add(subset)
                chosen.append(subset)
    members = np.asarray(chosen, dtype=np.int64)
    return pd.DataFrame(
        {
            "subset_id": np.repeat(np.arange(count, dtype=np.int64), size),
            "task": np.asarray(task_names, dtype=object)[members.ravel()],
        }
    )


def membership_matrix(subsets: pd.DataFrame, task_names: list[str]) -> np.ndarray:
    """Boolean (n_subsets, k) matrix; row r is the subset with the r-th smallest subset_id."""
    ids = np.sort(subsets["subset_id"].unique())
    row_of = pd.Series(np.arange(len(ids)), index=ids)
    col_of = pd.Series(np.arange(len(task_names)), index=task_names)
    unknown = sorted(set(subsets["task"]) - set(task_names))
    if unknown:
        raise ValueError(f"subsets name tasks {unknown[:5]} that the dataset does not have")
    matrix = np.zeros((len(ids), len(task_names)), dtype=bool)
    matrix[row_of[subsets["subset_id"]].to_numpy(), col_of[subsets["task"]].to_numpy()] = True
    return matrix


def pair_counts(subsets: pd.DataFrame, task_names: list[str]) -> pd.DataFrame:
    """Long table task_i, task_j, n_subsets: subsets holding both (the diagonal: holding i)."""
    membership = membership_matrix(subsets, task_names).astype(np.int64)
    counts = membership.T @ membership
    indices = np.arange(len(task_names))
    first, second = np.meshgrid(indices, indices, indexing="ij")
    names = np.asarray(task_names, dtype=object)
    return pd.DataFrame(
        {
            "task_i": names[first.ravel()],
            "task_j": names[second.ravel()],
            "n_subsets": counts.ravel(),
        }
    )


def expected_pair_count(n_tasks: int, size: int, count: int) -> float:
    """E[n_ij] for i != j under uniform fixed-size sampling: m a (a - 1) / (k (k - 1))."""
    return count * size * (size - 1) / (n_tasks * (n_tasks - 1))


def chunk_of(subset_ids: np.ndarray, chunk_size: int) -> np.ndarray:
    """The chunk each subset belongs to: consecutive blocks of ``chunk_size`` subset ids."""
    return np.asarray(subset_ids) // chunk_size


def read_chunk(subsets_path, chunk: int, chunk_size: int) -> pd.DataFrame:
    """The rows of the subsets table at ``subsets_path`` that belong to ``chunk``."""
    table = read_table(subsets_path, SUBSETS)
    mine = table[chunk_of(table["subset_id"].to_numpy(), chunk_size) == chunk]
    if mine.empty:
        raise ValueError(f"{subsets_path}: chunk {chunk} (of size {chunk_size}) holds no subsets")
    return mine


def n_chunks(count: int, chunk_size: int) -> int:
    """Number of chunks that ``count`` subsets fill."""
    return math.ceil(count / chunk_size)
