"""Clustering tasks on a symmetric affinity matrix (higher = train together).

The SDP relaxation (``solve_sdp``) is solved by maintained solvers through cvxpy: Clarabel
(interior point) up to CLARABEL_MAX_TASKS tasks, SCS (first-order operator splitting) above.
Nothing of either solver is written here; only the choice by k, the tolerances and the
progress log are.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from taskgroup.group.affinity import affinity_matrices
from taskgroup.group.groupings import check_n_clusters

log = logging.getLogger(__name__)

METHODS = ("spectral", "lloyd", "sdp")
ROUNDINGS = ("kmeans", "threshold")

# Restarts of every k-means / spectral fit: with k <= a few hundred tasks they cost
# milliseconds, and fewer restarts left Lloyd's in local optima on noisy block matrices.
N_INIT = 100

# cvxpy (and scikit-learn) are imported where they are used: the jobs that only read and
# write groupings (baselines, random partitions, the gathering) import this module too, and
# each of the two costs a couple of CPU seconds to import. Their names, equal to cvxpy's
# constants (a unit test checks):
CLARABEL, SCS = "CLARABEL", "SCS"
OPTIMAL = "optimal"
# Solver statuses whose X is used; anything else (infeasible, unbounded, user_limit...) raises.
ACCEPTED_STATUSES = (OPTIMAL, "optimal_inaccurate")

SIMILARITIES = ("profile", "exp")

# Up to this many tasks the SDP goes to Clarabel, above it to SCS. Clarabel's time per
# iteration grows like k^5 and its memory like k^4, SCS's like k^3 (one eigendecomposition
# of a (k, k) matrix per iteration) and k^2; past a few dozen tasks SCS is the faster, and
# its X gave Clarabel's rounded partitions (README "The SDP at scale"). 60 keeps the default
# and smoke configs (30 and 9 tasks) on the interior point, so their outputs do not change.
CLARABEL_MAX_TASKS = 60

# SCS settings when it is the primary solver (k > CLARABEL_MAX_TASKS): residuals to 1e-5
# leave row sums within about 1e-4 of 1, far below what the rounding notices; 1e-4 left
# 5e-3 for about 15% less time. The iteration cap bounds a stalled solve (it then ends
# "optimal_inaccurate" with a warning, or raises).
SCS_OPTIONS = {"eps_abs": 1e-5, "eps_rel": 1e-5, "max_iters": 20_000}


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ValueError naming ``clustering.<key>`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"clustering.{key} = {value!r}; expected one of {choices}")


@dataclass(frozen=True)
class ClusteringSettings:
    """How tasks are clustered: the config section ``clustering`` without ``methods`` (each
    caller names its method).

    similarity: one of SIMILARITIES, the kernel every method clusters (``similarity_kernel``).
    rounding: one of ROUNDINGS, how an SDP solution becomes labels (``round_sdp_solution``).
    n_clusters: an int >= 1, or "auto" for the count ``choose_n_clusters`` picks.
    max_clusters: the largest count "auto" tries (the scan is 1 .. min(k - 1, max_clusters)
        held out, 2 .. min(k - 1, max_clusters) by the silhouette).
    seed: seed of every k-means and spectral fit, and of the folds of an "auto" count.
    Raises ValueError for an unknown similarity or rounding, or an n_clusters that is neither
    an int nor "auto" (its range depends on k and is checked when clustering).
    """

    similarity: str
    rounding: str
    n_clusters: int | str
    max_clusters: int
    seed: int

    def __post_init__(self):
        _check_choice("similarity", self.similarity, SIMILARITIES)
        _check_choice("rounding", self.rounding, ROUNDINGS)
        if self.n_clusters != "auto" and (
            isinstance(self.n_clusters, bool) or not isinstance(self.n_clusters, int)
        ):
            raise ValueError(
                f"clustering.n_clusters = {self.n_clusters!r}; expected an int or 'auto'"
            )


@dataclass(frozen=True)
class Clustering:
    """The result of ``cluster``: labels (k,) int64, canonically ordered; n_clusters, the
    count used (configured or chosen); scan, the (n_clusters, criterion, score, score_se)
    table behind an "auto" choice (see ``choose_n_clusters``), None for a configured
    count."""

    labels: np.ndarray
    n_clusters: int
    scan: pd.DataFrame | None


def _exp_kernel(matrix: np.ndarray) -> np.ndarray:
    """exp(M / s), s = std of the off-diagonal entries of M, symmetrized."""
    off_diagonal = matrix[~np.eye(len(matrix), dtype=bool)]
    scale = off_diagonal.std() if off_diagonal.size and off_diagonal.std() > 0 else 1.0
    kernel = np.exp(matrix / scale)
    return (kernel + kernel.T) / 2.0


def similarity_kernel(affinity: np.ndarray, similarity: str) -> np.ndarray:
    """A nonnegative (k, k) similarity for spectral clustering of a signed affinity matrix.

    "exp": exp(A / s) on the affinity entries themselves.
    "profile": exp(C / s) where C_ij is the Pearson correlation of rows i and j of A: two
        tasks are similar when they relate alike to every other task, so each entry pools k
        noisy affinities instead of one.
    Uncovered pairs (NaN) count as 0, the neutral value of a z-scored affinity. Raises
    ValueError for another ``similarity``.
    """
    _check_choice("similarity", similarity, SIMILARITIES)
    filled = np.nan_to_num(affinity, nan=0.0)
    if similarity == "exp":
        return _exp_kernel(filled)
    centered = filled - filled.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centered, axis=1)
    norms = np.where(norms > 0, norms, 1.0)
    correlation = (centered @ centered.T) / np.outer(norms, norms)
    return _exp_kernel(correlation)


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0, 1, ... in order of their first task, so equal partitions give
    equal label vectors."""
    mapping: dict[int, int] = {}
    for label in labels:
        mapping.setdefault(int(label), len(mapping))
    return np.array([mapping[int(label)] for label in labels], dtype=np.int64)


def average_density(affinity: np.ndarray, labels: np.ndarray) -> float:
    """Sum over clusters C of v_C^T A v_C / |C| (v_C the 0/1 indicator), NaN entries as 0:
    the objective the SDP relaxation maximizes, used to compare methods on one scale."""
    filled = np.nan_to_num(affinity, nan=0.0)
    total = 0.0
    for cluster in np.unique(labels):
        members = labels == cluster
        total += filled[np.ix_(members, members)].sum() / members.sum()
    return float(total)


def _standardized(matrix: np.ndarray) -> np.ndarray:
    """(M - mean) / std of the off-diagonal entries of M (std 0 counts as 1).

    On the SDP's feasible set 1^T X 1 = k, so a shift adds a constant to <M, X> and a
    positive scale multiplies it: the optimal X is the same.
    """
    # Why standardize at all: Clarabel ends "optimal" rather than "optimal_inaccurate" more
    # often on a standardized matrix than on the raw one.
    off_diagonal = matrix[~np.eye(len(matrix), dtype=bool)]
    spread = off_diagonal.std() if off_diagonal.size else 0.0
    return (matrix - (off_diagonal.mean() if off_diagonal.size else 0.0)) / (
        spread if spread > 0 else 1.0
    )


def _solve_with_fallback(problem) -> str:
    """Solve the cvxpy ``problem`` with Clarabel; only if it raises or ends without an
    accepted status, retry with SCS (first-order, less accurate, but it rarely fails
    outright). Returns the solver name."""
    import cvxpy as cp

    try:
        problem.solve(solver=CLARABEL)
        if problem.status in ACCEPTED_STATUSES:
            return CLARABEL
        reason = f"status {problem.status!r}"
    except cp.SolverError as error:
        reason = str(error)
    log.warning("SDP: Clarabel failed (%s); retrying with SCS", reason)
    try:
        problem.solve(solver=SCS, eps_abs=1e-7, eps_rel=1e-7, max_iters=100_000)
    except cp.SolverError as error:
        raise RuntimeError(f"SDP: Clarabel ({reason}) and SCS ({error}) both failed") from error
    return SCS


def sdp_solver(k: int) -> str:
    """The solver ``solve_sdp`` uses for k tasks: CLARABEL when k <= CLARABEL_MAX_TASKS,
    else SCS."""
    return CLARABEL if k <= CLARABEL_MAX_TASKS else SCS


def sdp_violation(solution: np.ndarray, n_clusters: int) -> float:
    """The largest constraint violation of X (k, k) in the SDP of ``solve_sdp``: the max of
    max_i |(X 1)_i - 1|, |trace X - n_clusters|, max_ij (-X_ij) and -(smallest eigenvalue
    of (X + X^T) / 2), each clipped at 0. Costs one symmetric eigendecomposition."""
    symmetric = (solution + solution.T) / 2.0
    return float(max(
        np.abs(symmetric.sum(axis=1) - 1.0).max(),
        abs(np.trace(symmetric) - n_clusters),
        -symmetric.min(),
        -np.linalg.eigvalsh(symmetric)[0],
        0.0,
    ))


# SCS's progress table: its header and one row per 250 iterations (iteration, primal and
# dual residuals, gap, objective, scale, seconds).
_SCS_PROGRESS = re.compile(r"^\s*(iter \||\d+\|)")


@contextmanager
def _solver_rows_to_log(pattern: re.Pattern):
    """While the block runs, the lines that a compiled solver prints and that match
    ``pattern`` go to this module's log as they come; the others are dropped. A solver
    prints either through Python's ``sys.stdout`` (SCS's Python module does) or straight to
    file descriptor 1 (C's printf): both lead into one pipe here, and both are restored
    afterwards, also when the block raises."""
    sys.stdout.flush()
    read_end, write_end = os.pipe()
    saved = os.dup(1)
    os.dup2(write_end, 1)
    writer = os.fdopen(write_end, "w", buffering=1)
    previous, sys.stdout = sys.stdout, writer

    def forward():
        with os.fdopen(read_end, errors="replace") as lines:
            for line in lines:
                if pattern.match(line):
                    log.info("SDP: SCS %s", line.rstrip())

    reader = threading.Thread(target=forward, daemon=True)
    reader.start()
    try:
        yield
    finally:
        sys.stdout = previous
        writer.close()
        os.dup2(saved, 1)  # closes the pipe's last write end: the reader sees its end
        os.close(saved)
        reader.join()


def _solve_with_scs(problem) -> str:
    """Solve the cvxpy ``problem`` with SCS and SCS_OPTIONS (the primary solver for large k,
    no fallback: Clarabel would not fit in memory), its progress table in the log (a solve
    at k = 500 takes minutes). Returns SCS; raises RuntimeError if SCS raises."""
    import cvxpy as cp

    # verbose=True also makes cvxpy narrate its compilation on its own logger: kept quiet
    modelling = logging.getLogger("__cvxpy__")
    quiet = modelling.disabled
    modelling.disabled = True
    try:
        with _solver_rows_to_log(_SCS_PROGRESS):
            problem.solve(solver=SCS, verbose=True, **SCS_OPTIONS)
    except cp.SolverError as error:
        raise RuntimeError(f"SDP: SCS failed ({error})") from error
    finally:
        modelling.disabled = quiet
    return SCS


def solve_sdp(matrix: np.ndarray, n_clusters: int, solver: str | None = None) -> np.ndarray:
    """The (k, k) solution X of the Peng-Wei relaxation of k-means used by Grad-TAG:

        maximize <T, X>  s.t.  X PSD,  X >= 0 entrywise,  X 1 = 1,  trace X = n_clusters,

    with T = ``matrix`` (k, k), symmetric, higher = more alike; NaN counts as 0. For a
    partition into clusters C, X_ij = 1/|C| when i and j share C and 0 otherwise is
    feasible and <T, X> is its average density, so X relaxes the cluster indicator.

    solver: CLARABEL, SCS, or None for ``sdp_solver(k)`` (Clarabel up to
    CLARABEL_MAX_TASKS tasks, SCS above). Clarabel falls back to SCS (tight tolerances) if
    it raises or ends without an accepted status; SCS as the chosen solver runs with
    SCS_OPTIONS and has no fallback. SCS solves log their start, SCS's progress table as
    it runs, and at the end the status, iterations, objective, max constraint violation
    (``sdp_violation``) and seconds.
    Raises RuntimeError naming the status when the solve ends neither "optimal" nor
    "optimal_inaccurate", ValueError unless 1 <= n_clusters <= k or for another solver.
    The returned X is symmetrized and clipped at 0 (solver round-off).
    """
    k = matrix.shape[0]
    check_n_clusters(n_clusters, k)
    if solver is None:
        solver = sdp_solver(k)
    if solver not in (CLARABEL, SCS):
        raise ValueError(f"SDP solver {solver!r}; expected {CLARABEL!r} or {SCS!r}")
    import cvxpy as cp

    target = _standardized(np.nan_to_num(np.asarray(matrix, dtype=float), nan=0.0))
    solution = cp.Variable((k, k), PSD=True)
    problem = cp.Problem(
        cp.Maximize(cp.sum(cp.multiply(target, solution))),
        [solution >= 0, cp.sum(solution, axis=1) == 1, cp.trace(solution) == n_clusters],
    )
    if solver == CLARABEL:
        solver = _solve_with_fallback(problem)
    else:
        log.info("SDP: SCS on k = %d tasks, %d clusters", k, n_clusters)
        started = time.perf_counter()
        solver = _solve_with_scs(problem)
        if solution.value is not None:
            log.info(
                "SDP: SCS ended %r after %s iterations, objective %.8g, max constraint "
                "violation %.1e, %.1f s", problem.status, problem.solver_stats.num_iters,
                problem.value, sdp_violation(solution.value, n_clusters),
                time.perf_counter() - started,
            )
    if problem.status not in ACCEPTED_STATUSES or solution.value is None:
        raise RuntimeError(
            f"SDP solver {solver} ended with status {problem.status!r}; "
            f"expected one of {ACCEPTED_STATUSES}"
        )
    if problem.status != OPTIMAL:
        log.warning("SDP solver %s ended with status %r", solver, problem.status)
    value = (solution.value + solution.value.T) / 2.0
    return np.clip(value, 0.0, None)


def threshold_memberships(solution: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy thresholding of an SDP solution X (k, k), as in the Grad-TAG code.

    Scanning tasks in order, each task i not yet placed opens a set holding i and every
    later unplaced task j with X_ij > threshold. Returns a (n_sets, k) bool membership
    matrix; the number of sets is whatever the threshold gives, not n_clusters.
    """
    k = solution.shape[0]
    placed = np.zeros(k, dtype=bool)
    sets = []
    for i in range(k):
        if placed[i]:
            continue
        members = ~placed & (solution[i] > threshold)
        members[: i + 1] = False
        members[i] = True
        placed |= members
        sets.append(members)
    return np.array(sets, dtype=bool).reshape(len(sets), k)


def sdp_threshold(n_clusters: int, k: int) -> float:
    """c / k with c = max(1, n_clusters / 2): half the value X_ij takes within a cluster of
    average size k / n_clusters (1 / size), so a pair needs half the evidence of a typical
    co-member. (Grad-TAG thresholds at 1 / k, its workshop poster at c / k with c > 1.)"""
    return max(1.0, n_clusters / 2.0) / k


def _as_sets(membership: np.ndarray, k: int) -> list[list[int]]:
    """Non-empty task lists from (n_sets, k) bool membership or (k,) labels (< 0: unplaced)."""
    membership = np.asarray(membership)
    if membership.ndim == 1:
        if membership.shape != (k,):
            raise ValueError(f"labels have shape {membership.shape}; expected ({k},)")
        labels = membership.astype(np.int64)
        placed = np.unique(labels[labels >= 0])
        return [np.flatnonzero(labels == value).tolist() for value in placed]
    if membership.ndim != 2 or membership.shape[1] != k:
        raise ValueError(f"membership has shape {membership.shape}; expected (n_sets, {k})")
    return [np.flatnonzero(row).tolist() for row in membership.astype(bool) if row.any()]


def _mean_to(filled: np.ndarray, task: int, members: list[int]) -> float:
    """Mean affinity of ``task`` to the other members; -inf when there are none, so a task
    prefers a set where it has company."""
    others = [member for member in members if member != task]
    return float(filled[task, others].mean()) if others else -np.inf


def _resolve_overlaps(sets: list[list[int]], filled: np.ndarray) -> list[list[int]]:
    """Keep each task only in the set it has the highest mean affinity to; drop emptied sets."""
    for task in range(filled.shape[0]):
        holders = [index for index, members in enumerate(sets) if task in members]
        if len(holders) < 2:
            continue
        keep = max(holders, key=lambda index: _mean_to(filled, task, sets[index]))
        for index in holders:
            if index != keep:
                sets[index].remove(task)
    return [members for members in sets if members]


def _place_unplaced(sets: list[list[int]], filled: np.ndarray, n_clusters: int) -> None:
    """Give every task in no set a set, in place. While there are fewer than n_clusters sets
    the unplaced task that fits the existing sets worst opens a new one; the rest join the
    set they have the highest mean affinity to."""
    placed = {task for members in sets for task in members}
    unplaced = [task for task in range(filled.shape[0]) if task not in placed]
    while unplaced and len(sets) < n_clusters:
        fits = [max((_mean_to(filled, t, s) for s in sets), default=-np.inf) for t in unplaced]
        sets.append([unplaced.pop(int(np.argmin(fits)))])
    for task in unplaced:
        best = max(range(len(sets)), key=lambda index: _mean_to(filled, task, sets[index]))
        sets[best].append(task)


def _merge_closest(sets: list[list[int]], filled: np.ndarray) -> None:
    """Merge, in place, the two sets with the highest mean affinity between them."""
    pairs = [(a, b) for a in range(len(sets)) for b in range(a + 1, len(sets))]
    a, b = max(pairs, key=lambda pair: filled[np.ix_(sets[pair[0]], sets[pair[1]])].mean())
    sets[a].extend(sets.pop(b))


def _detach_misfit(sets: list[list[int]], filled: np.ndarray) -> None:
    """Move, in place, the task with the lowest mean affinity to the rest of its set (over
    sets of two or more) into a new singleton set."""
    candidates = [(index, task) for index, members in enumerate(sets) if len(members) > 1
                  for task in members]
    index, task = min(candidates, key=lambda pair: _mean_to(filled, pair[1], sets[pair[0]]))
    sets[index].remove(task)
    sets.append([task])


def repair_partition(membership: np.ndarray, matrix: np.ndarray, n_clusters: int) -> np.ndarray:
    """Turn any rounding output into a partition of the k tasks into n_clusters clusters.

    membership: (n_sets, k) bool (row s = the tasks of set s; sets may overlap, be empty or
        leave tasks out), or (k,) integer labels where a negative label means unplaced.
    matrix: (k, k) symmetric, higher = belong together (NaN as 0); it settles every choice.
    Steps: drop empty sets; a task in several sets stays in the one it has the highest mean
    affinity to; unplaced tasks open new sets while there are fewer than n_clusters (worst
    fitting first), the rest join their highest-mean-affinity set; then merge the closest
    pair of sets (highest mean between-set affinity) while there are too many, and detach
    the worst-fitting task into a singleton while there are too few.
    Returns canonical int64 labels (k,), every task exactly once; logs a warning when the
    count cannot be n_clusters (only when n_clusters > k).
    """
    filled = np.nan_to_num(np.asarray(matrix, dtype=float), nan=0.0)
    k = filled.shape[0]
    sets = _resolve_overlaps(_as_sets(membership, k), filled)
    _place_unplaced(sets, filled, n_clusters)
    while len(sets) > max(n_clusters, 1):
        _merge_closest(sets, filled)
    while len(sets) < n_clusters and any(len(members) > 1 for members in sets):
        _detach_misfit(sets, filled)
    if len(sets) != n_clusters:
        log.warning("repair_partition: %d clusters instead of n_clusters = %d", len(sets),
                    n_clusters)
    labels = np.empty(k, dtype=np.int64)
    for index, members in enumerate(sets):
        labels[members] = index
    return canonical_labels(labels)


def _one_hot(labels: np.ndarray) -> np.ndarray:
    """(n_labels, k) bool membership of integer labels (k,)."""
    return np.unique(labels)[:, None] == labels[None, :]


def round_sdp_solution(
    solution: np.ndarray, matrix: np.ndarray, n_clusters: int, rounding: str, seed: int
) -> np.ndarray:
    """Canonical int64 labels (k,) from an SDP solution X (k, k), repaired by
    ``repair_partition`` against ``matrix`` (the T the SDP maximized).

    "kmeans": k-means (N_INIT seeded restarts) on the rows of X. Rows of the exact
        solution of a clean block matrix are the scaled cluster indicators, so tasks of a
        cluster share a row; on noisy X the row as a whole votes, not single entries.
    "threshold": greedy X_ij > ``sdp_threshold(n_clusters, k)`` (``threshold_memberships``),
        the Grad-TAG rounding; its number of sets follows the threshold and is then repaired.
    Raises ValueError for another ``rounding``.
    """
    _check_choice("rounding", rounding, ROUNDINGS)
    k = solution.shape[0]
    if rounding == "kmeans":
        membership = _one_hot(_kmeans_labels(solution, n_clusters, seed))
    else:
        membership = threshold_memberships(solution, sdp_threshold(n_clusters, k))
    return repair_partition(membership, matrix, n_clusters)


def _kmeans_labels(rows: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means labels (k,) of the rows of a (k, d) array, N_INIT seeded restarts."""
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=n_clusters, n_init=N_INIT, random_state=seed)
    # One thread: for a few dozen rows the OpenMP start-up of each restart dominates, and on
    # a loaded 2-core machine 100 restarts took 2.4 s with the default threads, 0.26 s with one.
    with threadpool_limits(limits=1):
        return model.fit_predict(rows)


def _spectral_labels(kernel: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    model = SpectralClustering(
        n_clusters=n_clusters, affinity="precomputed", n_init=N_INIT, random_state=seed
    )
    with threadpool_limits(limits=1):
        return model.fit_predict(kernel)


def partition(affinity: np.ndarray, method: str, settings: ClusteringSettings) -> np.ndarray:
    """Labels (k,) int64, canonically ordered, of a symmetric (k, k) affinity clustered into
    exactly ``settings.n_clusters`` clusters (an int: "auto" is resolved by ``cluster``).

    All three methods work on the same matrix, ``similarity_kernel(affinity,
    settings.similarity)``, which keeps them comparable:
    "spectral": spectral clustering with the kernel as precomputed affinity.
    "lloyd": k-means on the kernel's rows, i.e. each task is described by its similarity to
        every task (with "profile" that is a smoothed correlation profile).
    "sdp": ``solve_sdp`` on the kernel, rounded by ``settings.rounding`` (see
        ``round_sdp_solution``).
    Every result goes through ``repair_partition`` so it has exactly n_clusters clusters.
    Raises ValueError for an unknown method, for n_clusters = "auto", and unless
    1 <= n_clusters <= k (``check_n_clusters``).
    """
    n_clusters = settings.n_clusters
    if n_clusters == "auto":
        raise ValueError("partition needs a number of clusters; cluster() resolves 'auto'")
    k = affinity.shape[0]
    check_n_clusters(n_clusters, k)
    _check_choice("method", method, METHODS)
    kernel = similarity_kernel(affinity, settings.similarity)
    if n_clusters == 1:
        return np.zeros(k, dtype=np.int64)
    if n_clusters == k:
        return np.arange(k, dtype=np.int64)
    if method == "sdp":
        solution = solve_sdp(kernel, n_clusters)
        return round_sdp_solution(solution, kernel, n_clusters, settings.rounding, settings.seed)
    fit = _spectral_labels if method == "spectral" else _kmeans_labels
    return repair_partition(_one_hot(fit(kernel, n_clusters, settings.seed)), kernel, n_clusters)


def _kernel_distance(kernel: np.ndarray) -> np.ndarray:
    """log(max K) - log(K_ij), zero diagonal. Both kernels are exp(M / s), so this is
    (max M - M_ij) / s: for "profile" the correlation distance (1 - corr) / s."""
    logs = np.log(kernel)
    distance = logs.max() - logs
    np.fill_diagonal(distance, 0.0)
    return (distance + distance.T) / 2.0


def usable_folds(n_folds: int, n_subsets: int) -> int:
    """The cross-fit folds to ask :func:`fold_affinities` for when the config asks for
    ``n_folds`` (clustering.auto_folds) over ``n_subsets`` subsets: at most n_subsets // 2,
    so that every fold holds two subsets (a small design gets fewer folds, not an error)."""
    return min(n_folds, n_subsets // 2)


def fold_affinities(
    membership: np.ndarray, losses: np.ndarray, n_folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Normalized higher-order affinities (:func:`taskgroup.group.affinity.affinity_matrices`)
    of complementary parts of the subsets, for a ``n_folds``-fold cross-fit.

    membership (m, k) bool, losses (m, k): the subsets and their losses. The subsets are
    shuffled by the generator seeded by ``seed`` and cut into ``n_folds`` folds of sizes
    differing by at most one (``numpy.array_split``); fold f gives the pair (fit, held):
    the affinity of every subset outside fold f, and that of fold f. With n_folds = 2 the
    two pairs are the two disjoint halves, each way round. Returns ``n_folds`` pairs of
    (k, k) matrices. Raises ValueError unless 2 <= n_folds and 2 n_folds <= m."""
    m = membership.shape[0]
    if n_folds < 2 or 2 * n_folds > m:
        raise ValueError(
            f"a {n_folds}-fold split of {m} subsets: expected 2 <= folds <= subsets / 2"
        )
    folds = np.array_split(np.random.default_rng(seed).permutation(m), n_folds)
    pairs = []
    for index, held in enumerate(folds):
        fit = np.concatenate([fold for other, fold in enumerate(folds) if other != index])
        pairs.append((
            affinity_matrices(membership[fit], losses[fit])[1],
            affinity_matrices(membership[held], losses[held])[1],
        ))
    return pairs


def held_out_block_error(fit: np.ndarray, held: np.ndarray, labels: np.ndarray) -> float:
    """How well a partition found on one affinity predicts another, independent one.

    fit, held: (k, k) symmetric affinities (NaN = pair not covered); labels (k,) int. Each
    block (pair of clusters, unordered) is predicted by the mean of ``fit`` over its task
    pairs i < j (a block ``fit`` does not cover: the mean over every covered pair); returns
    the mean squared error of that prediction over the pairs i < j that ``held`` covers
    (NaN when it covers none). A single cluster predicts the overall mean: its error is the
    held-out spread that no partition explains."""
    k = len(labels)
    upper = np.triu_indices(k, k=1)
    first, second = labels[upper[0]], labels[upper[1]]
    low, high = np.minimum(first, second), np.maximum(first, second)
    block = low * (int(labels.max()) + 1) + high
    fitted, observed = fit[upper], held[upper]
    covered = np.isfinite(fitted)
    if not covered.any() or not np.isfinite(observed).any():
        return float("nan")
    sums = np.bincount(block[covered], weights=fitted[covered], minlength=block.max() + 1)
    counts = np.bincount(block[covered], minlength=block.max() + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, fitted[covered].mean())
    prediction = means[block]
    scored = np.isfinite(observed)
    return float(np.mean((observed[scored] - prediction[scored]) ** 2))


def _held_out_scan(
    folds: list[tuple[np.ndarray, np.ndarray]], method: str, settings: ClusteringSettings,
    candidates: list[int],
) -> pd.DataFrame:
    """Per candidate count: each fold's held-out block error, divided by the error of one
    cluster on the same fold; its mean and standard error over folds."""
    ratios = np.empty((len(candidates), len(folds)))
    k = folds[0][0].shape[0]
    for column, (fit, held) in enumerate(folds):
        baseline = held_out_block_error(fit, held, np.zeros(k, dtype=np.int64))
        for row, n in enumerate(candidates):
            labels = partition(fit, method, replace(settings, n_clusters=n))
            ratios[row, column] = held_out_block_error(fit, held, labels) / (
                baseline if baseline > 0 else 1.0
            )
    return pd.DataFrame({
        "n_clusters": np.array(candidates, dtype=np.int64),
        "criterion": "held_out_block_error",
        "score": ratios.mean(axis=1),
        "score_se": ratios.std(axis=1, ddof=1) / np.sqrt(len(folds)),
    })


def _silhouette_scan(
    affinity: np.ndarray, labels: list[np.ndarray], settings: ClusteringSettings,
    candidates: list[int],
) -> pd.DataFrame:
    from sklearn.metrics import silhouette_score

    distance = _kernel_distance(similarity_kernel(affinity, settings.similarity))
    return pd.DataFrame({
        "n_clusters": np.array(candidates, dtype=np.int64),
        "criterion": "silhouette",
        "score": [
            float(silhouette_score(distance, found, metric="precomputed")) for found in labels
        ],
        "score_se": np.nan,
    })


def choose_n_clusters(
    affinity: np.ndarray, method: str, settings: ClusteringSettings, candidates=None,
    folds: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> Clustering:
    """The clustering of ``clustering.n_clusters: auto``: the count, its labels and the scan.

    With ``folds`` (pairs (fit, held) of affinities of the same tasks from disjoint
    evidence, e.g. the cross-fit folds of the subsets, :func:`fold_affinities`): a held-out
    choice. For every candidate n (default 1 .. min(k - 1, settings.max_clusters)) each
    fit affinity is clustered with ``partition`` (``method``, ``settings`` with n_clusters =
    n), and that partition, with the fit's block means, predicts the held affinity
    (:func:`held_out_block_error`); the score is that error divided by one cluster's (the
    overall mean's), averaged over the folds (score_se: its standard error over them). Too
    few clusters leave between-group contrast unexplained; too many fit the fit part's
    noise, which the held part does not share. The count is the smallest n whose score is
    within one standard error of the lowest (the one-standard-error rule: no finer
    partition than the evidence supports); n = 1 means the affinity holds no structure
    that reproduces. Cost: one ``partition`` per candidate and fold, plus one of the full
    ``affinity`` at the chosen count (its labels are returned).

    Without ``folds`` (a source with no replicates to split): the mean silhouette of each
    candidate's partition of ``affinity`` (default candidates 2 .. min(k - 1,
    settings.max_clusters)) under the distance log(max K) - log(K_ij) of the similarity
    kernel K, the best score winning (the smallest n on ties); a guess on the same data,
    logged as such.

    Returns a Clustering whose scan has columns n_clusters (int64), criterion (str:
    "held_out_block_error", lower is better, or "silhouette", higher is better), score and
    score_se (float; NaN for the silhouette), one row per candidate in ascending order.
    Fewer than 3 tasks leave the silhouette no candidate: one cluster and an empty scan,
    with a warning. Raises ValueError for an unknown method, fewer than 2 folds or a
    candidate outside 1 .. k - 1 (2 .. k - 1 for the silhouette)."""
    k = affinity.shape[0]
    _check_choice("method", method, METHODS)
    if folds is not None and len(folds) < 2:
        raise ValueError(f"choose_n_clusters: {len(folds)} fold(s); expected at least 2")
    lowest = 1 if folds else 2
    if candidates is None:
        candidates = range(lowest, min(k - 1, settings.max_clusters) + 1)
    candidates = sorted({int(n) for n in candidates})
    if any(not lowest <= n <= k - 1 for n in candidates):
        raise ValueError(
            f"clustering.n_clusters candidates {candidates} must lie between {lowest} and "
            f"k - 1 = {k - 1}"
        )
    if not candidates:
        log.warning("choose_n_clusters: no candidate between 2 and k - 1 = %d; using 1", k - 1)
        scan = pd.DataFrame({
            "n_clusters": pd.Series([], dtype="int64"), "criterion": pd.Series([], dtype=str),
            "score": pd.Series([], dtype=float), "score_se": pd.Series([], dtype=float),
        })
        return Clustering(np.zeros(k, dtype=np.int64), 1, scan)
    if folds:
        scan = _held_out_scan(folds, method, settings, candidates)
        best = int(scan["score"].idxmin())
        within = scan["score"] <= scan["score"].iloc[best] + scan["score_se"].iloc[best]
        # the first such row is the smallest count, since candidates are sorted
        chosen = candidates[int(np.flatnonzero(within.to_numpy())[0])]
        return Clustering(
            partition(affinity, method, replace(settings, n_clusters=chosen)), chosen, scan
        )
    log.warning("choose_n_clusters: no held-out folds of the affinity; the count is the "
                "silhouette's guess on the same data")
    labels = [partition(affinity, method, replace(settings, n_clusters=n)) for n in candidates]
    scan = _silhouette_scan(affinity, labels, settings, candidates)
    # idxmax returns the first maximum, i.e. the smallest n, since candidates are sorted.
    best = int(scan["score"].idxmax())
    return Clustering(labels[best], candidates[best], scan)


def cluster(
    affinity: np.ndarray, method: str, settings: ClusteringSettings,
    folds: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> Clustering:
    """Cluster a symmetric (k, k) affinity with ``method`` into ``settings.n_clusters``
    clusters, or, for "auto", into the count ``choose_n_clusters`` picks (held out on
    ``folds`` when given, else by the silhouette). Raises as ``partition`` and
    ``choose_n_clusters``."""
    if settings.n_clusters == "auto":
        return choose_n_clusters(affinity, method, settings, folds=folds)
    return Clustering(partition(affinity, method, settings), settings.n_clusters, None)
