"""Clustering tasks on a symmetric affinity matrix (higher = train together)."""

from __future__ import annotations

import logging

import cvxpy as cp
import numpy as np
import pandas as pd
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

METHODS = ("spectral", "lloyd", "sdp")
ROUNDINGS = ("kmeans", "threshold")

# Restarts of every k-means / spectral fit: with k <= a few hundred tasks they cost
# milliseconds, and fewer restarts left Lloyd's in local optima on noisy block matrices.
N_INIT = 100

# Solver statuses whose X is used; anything else (infeasible, unbounded, user_limit...) raises.
ACCEPTED_STATUSES = (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)

# choose_n_clusters scans 2 .. min(k - 1, MAX_AUTO_CLUSTERS); the reference code uses
# 20 clusters for 100 tasks, so the cap leaves room above that.
MAX_AUTO_CLUSTERS = 25


SIMILARITIES = ("profile", "exp")


def _exp_kernel(matrix: np.ndarray) -> np.ndarray:
    """exp(M / s), s = std of the off-diagonal entries of M, symmetrized."""
    off_diagonal = matrix[~np.eye(len(matrix), dtype=bool)]
    scale = off_diagonal.std() if off_diagonal.size and off_diagonal.std() > 0 else 1.0
    kernel = np.exp(matrix / scale)
    return (kernel + kernel.T) / 2.0


def similarity_kernel(affinity: np.ndarray, similarity: str = "profile") -> np.ndarray:
    """A nonnegative (k, k) similarity for spectral clustering of a signed affinity matrix.

    "exp": exp(A / s) on the affinity entries themselves.
    "profile": exp(C / s) where C_ij is the Pearson correlation of rows i and j of A: two
        tasks are similar when they relate alike to every other task. Each entry pools k
        noisy affinities instead of one, which recovered planted groups more reliably
        (ARI 0.91 to 1.0 against 0.63 to 0.81 for "exp" on six 30-task matrices from real
        fine-tuning with 600 subsets).
    Uncovered pairs (NaN) count as 0, the neutral value of a z-scored affinity.
    """
    filled = np.nan_to_num(affinity, nan=0.0)
    if similarity == "exp":
        return _exp_kernel(filled)
    if similarity == "profile":
        centered = filled - filled.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(centered, axis=1)
        norms = np.where(norms > 0, norms, 1.0)
        correlation = (centered @ centered.T) / np.outer(norms, norms)
        return _exp_kernel(correlation)
    raise ValueError(f"clustering.similarity = {similarity!r}; expected one of {SIMILARITIES}")


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


def _check_names(method: str, rounding: str) -> None:
    if method not in METHODS:
        raise ValueError(f"clustering.method = {method!r}; expected one of {METHODS}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"clustering.rounding = {rounding!r}; expected one of {ROUNDINGS}")


def _standardized(matrix: np.ndarray) -> np.ndarray:
    """(M - mean) / std of the off-diagonal entries of M (std 0 counts as 1).

    On the SDP's feasible set 1^T X 1 = k, so a shift adds a constant to <M, X> and a
    positive scale multiplies it: the optimal X is the same. Clarabel, however, returned
    "optimal_inaccurate" on 3 of the 6 NaN-filled planted affinities unscaled and "optimal"
    on all 6 after this.
    """
    off_diagonal = matrix[~np.eye(len(matrix), dtype=bool)]
    spread = off_diagonal.std() if off_diagonal.size else 0.0
    return (matrix - (off_diagonal.mean() if off_diagonal.size else 0.0)) / (
        spread if spread > 0 else 1.0
    )


def _solve_with_fallback(problem: cp.Problem) -> str:
    """Solve with Clarabel; only if it raises or ends without an accepted status, retry with
    SCS (first-order, less accurate, but it rarely fails outright). Returns the solver name."""
    try:
        problem.solve(solver=cp.CLARABEL)
        if problem.status in ACCEPTED_STATUSES:
            return cp.CLARABEL
        reason = f"status {problem.status!r}"
    except cp.SolverError as error:
        reason = str(error)
    log.warning("SDP: Clarabel failed (%s); retrying with SCS", reason)
    try:
        problem.solve(solver=cp.SCS, eps_abs=1e-7, eps_rel=1e-7, max_iters=100_000)
    except cp.SolverError as error:
        raise RuntimeError(f"SDP: Clarabel ({reason}) and SCS ({error}) both failed") from error
    return cp.SCS


def solve_sdp(matrix: np.ndarray, n_clusters: int) -> np.ndarray:
    """The (k, k) solution X of the Peng-Wei relaxation of k-means used by Grad-TAG:

        maximize <T, X>  s.t.  X PSD,  X >= 0 entrywise,  X 1 = 1,  trace X = n_clusters,

    with T = ``matrix`` (k, k), symmetric, higher = more alike; NaN counts as 0. For a
    partition into clusters C, X_ij = 1/|C| when i and j share C and 0 otherwise is
    feasible and <T, X> is its average density, so X relaxes the cluster indicator.

    Solved by Clarabel (interior point; about 0.2 s for k = 30), SCS as fallback. Raises
    RuntimeError naming the status when neither ends "optimal" or "optimal_inaccurate".
    The returned X is symmetrized and clipped at 0 (solver round-off is ~1e-9).
    """
    k = matrix.shape[0]
    if not 1 <= n_clusters <= k:
        raise ValueError(f"clustering.n_clusters = {n_clusters} must be between 1 and k = {k}")
    target = _standardized(np.nan_to_num(np.asarray(matrix, dtype=float), nan=0.0))
    solution = cp.Variable((k, k), PSD=True)
    problem = cp.Problem(
        cp.Maximize(cp.sum(cp.multiply(target, solution))),
        [solution >= 0, cp.sum(solution, axis=1) == 1, cp.trace(solution) == n_clusters],
    )
    solver = _solve_with_fallback(problem)
    if problem.status not in ACCEPTED_STATUSES or solution.value is None:
        raise RuntimeError(
            f"SDP solver {solver} ended with status {problem.status!r}; "
            f"expected one of {ACCEPTED_STATUSES}"
        )
    if problem.status != cp.OPTIMAL:
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
    co-member. Grad-TAG thresholds at 1 / k and its workshop poster at c / k with c > 1; on
    the SDP of the six planted NaN-filled affinities c = 3 (= 6 / 2) gave ARI 1.0, 0.91, 1.0,
    1.0, 0.91, 1.0 against 0.91, 0.91, 1.0, 0.91, 0.91, 1.0 for c = 1."""
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
    solution: np.ndarray, matrix: np.ndarray, n_clusters: int, rounding: str = "kmeans",
    seed: int = 0,
) -> np.ndarray:
    """Canonical int64 labels (k,) from an SDP solution X (k, k), repaired by
    ``repair_partition`` against ``matrix`` (the T the SDP maximized).

    "kmeans": k-means (N_INIT seeded restarts) on the rows of X. Rows of the exact
        solution of a clean block matrix are the scaled cluster indicators, so tasks of a
        cluster share a row; on noisy X the row as a whole votes, not single entries.
    "threshold": greedy X_ij > ``sdp_threshold(n_clusters, k)`` (``threshold_memberships``),
        the Grad-TAG rounding; its number of sets follows the threshold and is then repaired.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"clustering.rounding = {rounding!r}; expected one of {ROUNDINGS}")
    k = solution.shape[0]
    if rounding == "kmeans":
        membership = _one_hot(_kmeans_labels(solution, n_clusters, seed))
    else:
        membership = threshold_memberships(solution, sdp_threshold(n_clusters, k))
    return repair_partition(membership, matrix, n_clusters)


def _kmeans_labels(rows: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means labels (k,) of the rows of a (k, d) array, N_INIT seeded restarts."""
    model = KMeans(n_clusters=n_clusters, n_init=N_INIT, random_state=seed)
    # One thread: for a few dozen rows the OpenMP start-up of each restart dominates, and on
    # a loaded 2-core machine 100 restarts took 2.4 s with the default threads, 0.26 s with one.
    with threadpool_limits(limits=1):
        return model.fit_predict(rows)


def _spectral_labels(kernel: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    model = SpectralClustering(
        n_clusters=n_clusters, affinity="precomputed", n_init=N_INIT, random_state=seed
    )
    with threadpool_limits(limits=1):
        return model.fit_predict(kernel)


def partition(
    affinity: np.ndarray, n_clusters: int, method: str, similarity: str, seed: int,
    rounding: str = "kmeans",
) -> np.ndarray:
    """Cluster labels (k,) int64, canonically ordered, for a symmetric (k, k) affinity.

    All three methods work on the same matrix, ``similarity_kernel(affinity, similarity)``:
    "spectral": spectral clustering with the kernel as precomputed affinity.
    "lloyd": k-means on the kernel's rows, i.e. each task is described by its similarity to
        every task (with "profile" that is a smoothed correlation profile). On the six
        30-task planted matrices this gave ARI 1.0 on five and 0.91 on one, the same as
        k-means on the rows of the affinity itself, and the shared kernel keeps the three
        methods comparable; with "exp" it is weaker (ARI 0.55 to 0.82).
    "sdp": ``solve_sdp`` on the kernel, rounded by ``rounding`` (see ``round_sdp_solution``).
        The profile kernel gave ARI 1.0 on five of the six matrices and 0.91 on one, against
        three 0.91s for the NaN-filled affinity and 0.63 to 1.0 for the "exp" kernel.
    Every result goes through ``repair_partition`` so it has exactly n_clusters clusters.
    ``rounding`` is only used by "sdp" but is checked for every method.
    """
    k = affinity.shape[0]
    if not 1 <= n_clusters <= k:
        raise ValueError(f"clustering.n_clusters = {n_clusters} must be between 1 and k = {k}")
    _check_names(method, rounding)
    kernel = similarity_kernel(affinity, similarity)
    if n_clusters == 1:
        return np.zeros(k, dtype=np.int64)
    if n_clusters == k:
        return np.arange(k, dtype=np.int64)
    if method == "sdp":
        return round_sdp_solution(solve_sdp(kernel, n_clusters), kernel, n_clusters, rounding,
                                  seed)
    fit = _spectral_labels if method == "spectral" else _kmeans_labels
    return repair_partition(_one_hot(fit(kernel, n_clusters, seed)), kernel, n_clusters)


def _kernel_distance(kernel: np.ndarray) -> np.ndarray:
    """log(max K) - log(K_ij), zero diagonal. Both kernels are exp(M / s), so this is
    (max M - M_ij) / s: for "profile" the correlation distance (1 - corr) / s."""
    logs = np.log(kernel)
    distance = logs.max() - logs
    np.fill_diagonal(distance, 0.0)
    return (distance + distance.T) / 2.0


def choose_n_clusters(
    affinity: np.ndarray, method: str, similarity: str, seed: int,
    candidates=None, rounding: str = "kmeans",
) -> tuple[int, pd.DataFrame]:
    """The number of clusters for ``clustering.n_clusters: auto``, and the scan behind it.

    Rule: cluster with ``partition`` (same method, similarity, seed, rounding) for every
    candidate n (default 2 .. min(k - 1, MAX_AUTO_CLUSTERS)), score each partition by its
    mean silhouette under the distance log(max K) - log(K_ij) of the similarity kernel K
    (for "profile": the correlation distance of affinity rows, scaled), and pick the best
    score, the smallest n on ties.
    Measured: with "profile" it picked 6 for all three methods on all six 30-task planted
    matrices (6 planted groups) and on a noiseless 6-block matrix; the eigengap of the
    normalized Laplacian of the same kernel picked 3 on two of the six. With "exp" the
    silhouette picked 2 to 11, so prefer "profile" when choosing automatically.
    Cost: one clustering per candidate, 0.2 to 0.7 s each for k = 30 on a loaded 2-core
    machine (SDP with k-means rounding the slowest).

    Returns (chosen n, DataFrame with int64 column n_clusters and float column score).
    Fewer than 3 tasks leave no candidate: returns 1 and an empty table, with a warning.
    """
    k = affinity.shape[0]
    _check_names(method, rounding)
    if candidates is None:
        candidates = range(2, min(k - 1, MAX_AUTO_CLUSTERS) + 1)
    candidates = sorted({int(n) for n in candidates})
    if any(not 2 <= n <= k - 1 for n in candidates):
        raise ValueError(
            f"clustering.n_clusters candidates {candidates} must lie between 2 and k - 1 = {k - 1}"
        )
    if not candidates:
        log.warning("choose_n_clusters: no candidate between 2 and k - 1 = %d; using 1", k - 1)
        return 1, pd.DataFrame(
            {"n_clusters": pd.Series([], dtype="int64"), "score": pd.Series([], dtype=float)}
        )
    distance = _kernel_distance(similarity_kernel(affinity, similarity))
    scores = [
        float(silhouette_score(
            distance, partition(affinity, n, method, similarity, seed, rounding),
            metric="precomputed",
        ))
        for n in candidates
    ]
    table = pd.DataFrame({"n_clusters": np.array(candidates, dtype=np.int64), "score": scores})
    # idxmax returns the first maximum, i.e. the smallest n, since candidates are sorted.
    return int(table.loc[table["score"].idxmax(), "n_clusters"]), table
