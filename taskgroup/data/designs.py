"""Random task subsets of a fixed size, how often each pair of tasks is covered, and the
explicit designs of singletons and pairs (every pair, or a sample of them at large k)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from taskgroup.data.tables import SUBSETS, read_table


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


def random_design(task_names: list[str], size: int, count: int, seed: int) -> pd.DataFrame:
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


def design_of(subsets: pd.DataFrame, source="subsets table") -> str:
    """The one design named in the ``design`` column of a subsets table."""
    designs = subsets["design"].unique()
    if len(designs) != 1:
        raise ValueError(f"{source}: expected one design, found {sorted(designs)}")
    return str(designs[0])


def n_chunks(count: int, chunk_size: int) -> int:
    """Number of chunks that ``count`` subsets fill."""
    return math.ceil(count / chunk_size)


def singletons_and_pairs(n_tasks: int) -> list[tuple[int, ...]]:
    """Every singleton, then every unordered pair of the task indices 0..n_tasks-1.

    Order (fixed): ``(0,), (1,), ..., (k-1,)``, then the pairs ``(i, j)`` with ``i < j`` in
    lexicographic order ``(0, 1), (0, 2), ..., (0, k-1), (1, 2), ..., (k-2, k-1)``.
    k + k(k-1)/2 subsets in all; each tuple is sorted. Training on all of them gives, for every
    ordered pair, f_i({i}) and f_i({i, j}) (see
    :func:`taskgroup.group.surrogates.pairwise_transfer`).
    """
    if n_tasks < 1:
        raise ValueError(f"singletons_and_pairs needs at least one task, got n_tasks = {n_tasks}")
    singletons = [(i,) for i in range(n_tasks)]
    return singletons + list(itertools.combinations(range(n_tasks), 2))


@dataclass(frozen=True)
class PairSample:
    """How the pair design samples its pairs (config ``subsets.pairs``, once k is above
    ``sample_above_tasks``).

    per_task: pairs each task is in (even, >= 2, below k - 1: at k - 1 every pair is in).
    seed: seed of the random order the pairs are drawn from.
    """

    per_task: int
    seed: int


def sampled_pairs(n_tasks: int, sample: PairSample) -> list[tuple[int, int]]:
    """A seeded random set of pairs of the task indices 0..n_tasks-1 in which every task is
    in exactly ``sample.per_task`` pairs.

    The tasks are put in a random cyclic order (``numpy.random.default_rng(sample.seed)``)
    and each is paired with the ``per_task / 2`` next tasks in that order (a circulant
    graph on a random labelling): n_tasks * per_task / 2 distinct pairs, each pair of tasks
    equally likely to be drawn (probability per_task / (n_tasks - 1)), and the pairs
    connect every task to every other through a chain of pairs. Returned sorted
    (each tuple (i, j) with i < j, in lexicographic order). Raises ValueError when
    per_task is odd, below 2, or not below n_tasks - 1 (then every pair is needed: use
    :func:`singletons_and_pairs`).
    """
    per_task = sample.per_task
    if per_task < 2 or per_task % 2:
        raise ValueError(f"pairs per task = {per_task} must be even and at least 2")
    if per_task >= n_tasks - 1:
        raise ValueError(
            f"pairs per task = {per_task} with k = {n_tasks} tasks: a sample needs fewer than "
            f"k - 1 = {n_tasks - 1} pairs per task; value every pair instead"
        )
    order = np.random.default_rng(sample.seed).permutation(n_tasks)
    pairs = set()
    for offset in range(1, per_task // 2 + 1):
        partner = np.roll(order, -offset)
        for first, second in zip(order.tolist(), partner.tolist()):
            pairs.add((min(first, second), max(first, second)))
    return sorted(pairs)


def sampled_pair_count(n_tasks: int, per_task: int) -> int:
    """Number of pairs :func:`sampled_pairs` draws: n_tasks * per_task / 2."""
    return n_tasks * per_task // 2


def singletons_and_sampled_pairs(n_tasks: int, sample: PairSample) -> list[tuple[int, ...]]:
    """Every singleton ``(0,), ..., (k-1,)``, then the pairs of :func:`sampled_pairs` in
    lexicographic order: k + k per_task / 2 subsets, against k + k (k-1) / 2 for
    :func:`singletons_and_pairs`. Raises ValueError as :func:`sampled_pairs`."""
    return [(i,) for i in range(n_tasks)] + list(sampled_pairs(n_tasks, sample))


def design_table(design: list[tuple[int, ...]], task_names: list[str]) -> pd.DataFrame:
    """The long subsets table (subset_id, task) of an explicit design of task-index tuples.

    Subset ids are 0..len(design)-1 in the order of ``design``; tasks of a subset in the order of
    its tuple. For example ``design_table(singletons_and_pairs(k), names)``.
    """
    sizes = [len(subset) for subset in design]
    flat = [index for subset in design for index in subset]
    bad = [index for index in flat if not 0 <= index < len(task_names)]
    if bad:
        raise ValueError(
            f"design holds task indices {sorted(set(bad))[:5]} outside 0..{len(task_names) - 1}"
        )
    repeated = [subset for subset in design if len(set(subset)) != len(subset)]
    if repeated:
        raise ValueError(f"design subsets repeat a task: {repeated[:3]}")
    return pd.DataFrame(
        {
            "subset_id": np.repeat(np.arange(len(design), dtype=np.int64), sizes),
            "task": np.asarray(task_names, dtype=object)[np.asarray(flat, dtype=np.int64)],
        }
    )
