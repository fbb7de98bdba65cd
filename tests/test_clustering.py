import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from taskgroup.data.tables import CLUSTER_SCAN, read_table, tasks_table, write_table
from taskgroup.group import clustering
from taskgroup.group.affinity import affinity_matrices, affinity_table
from taskgroup.group.clustering import (
    METHODS,
    ROUNDINGS,
    ClusteringSettings,
    average_density,
    canonical_labels,
    choose_n_clusters,
    cluster,
    fold_affinities,
    held_out_block_error,
    partition,
    repair_partition,
    round_sdp_solution,
    similarity_kernel,
    solve_sdp,
    threshold_memberships,
    usable_folds,
)
from taskgroup.group.groupings import check_n_clusters
from taskgroup.stages.cluster import cluster_tasks


def settings(n_clusters, similarity="profile", seed=0, rounding="kmeans", max_clusters=10):
    return ClusteringSettings(
        similarity=similarity, rounding=rounding, n_clusters=n_clusters,
        max_clusters=max_clusters, seed=seed,
    )


def block_matrix(sizes, within=1.0, between=-0.5, noise=0.0, seed=0):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    matrix = np.where(labels[:, None] == labels[None, :], within, between)
    rng = np.random.default_rng(seed)
    jitter = rng.normal(scale=noise, size=matrix.shape)
    return matrix + (jitter + jitter.T) / 2, labels


@pytest.mark.parametrize("similarity", ["profile", "exp"])
def test_spectral_recovers_noisy_blocks(similarity):
    matrix, truth = block_matrix([4, 5, 3], noise=0.3, seed=1)
    order = np.random.default_rng(2).permutation(len(truth))
    labels = partition(matrix[np.ix_(order, order)], "spectral", settings(3, similarity))
    assert adjusted_rand_score(truth[order], labels) == 1.0


def test_labels_are_canonical_and_deterministic():
    matrix, _ = block_matrix([3, 3, 3], noise=0.1)
    first = partition(matrix, "spectral", settings(3))
    assert first.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert canonical_labels(np.array([5, 5, 2, 7, 2])).tolist() == [0, 0, 1, 2, 1]


def test_trivial_cluster_counts_and_bad_counts():
    matrix, _ = block_matrix([2, 2])
    assert partition(matrix, "spectral", settings(1)).tolist() == [0, 0, 0, 0]
    assert partition(matrix, "spectral", settings(4)).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="n_clusters = 5"):
        partition(matrix, "spectral", settings(5))


def test_similarity_is_symmetric_positive_and_tolerates_nan():
    matrix, _ = block_matrix([3, 3], noise=0.2)
    matrix[0, 4] = matrix[4, 0] = np.nan
    for similarity in ("profile", "exp"):
        kernel = similarity_kernel(matrix, similarity)
        assert np.isfinite(kernel).all() and (kernel > 0).all()
        np.testing.assert_allclose(kernel, kernel.T)


def test_average_density_by_hand():
    matrix = np.array([[1.0, 2.0, 0.0], [2.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    # clusters {0, 1} and {2}: (1 + 2 + 2 + 3) / 2 + 4 / 1
    assert average_density(matrix, np.array([0, 0, 1])) == pytest.approx(8.0)


def block_indicator(labels):
    """X_ij = 1/|C| when i and j share cluster C, else 0: the SDP's value for a partition."""
    same = labels[:, None] == labels[None, :]
    return same / np.bincount(labels)[labels][None, :]


def test_sdp_on_clean_blocks_is_the_block_indicator():
    matrix, truth = block_matrix([4, 3, 5], within=1.0, between=-1.0)
    solution = solve_sdp(matrix, 3)
    np.testing.assert_allclose(solution, block_indicator(truth), atol=1e-5)
    # The SDP value of a partition is its average density.
    assert np.sum(matrix * solution) == pytest.approx(average_density(matrix, truth), abs=1e-4)
    for rounding in ROUNDINGS:
        labels = round_sdp_solution(solution, matrix, 3, rounding, 0)
        assert adjusted_rand_score(truth, labels) == 1.0


def test_threshold_rounding_is_greedy_in_task_order():
    solution = np.array(
        [[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.3, 0.0], [0.0, 0.3, 0.7, 0.0], [0, 0, 0, 1.0]]
    )
    # Task 1 is taken by task 0's set, so task 2 does not join it through task 1.
    sets = threshold_memberships(solution, 0.25)
    assert sets.astype(int).tolist() == [[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


def assert_partition(labels, k, n_clusters):
    assert labels.shape == (k,) and labels.dtype == np.int64
    assert sorted(set(labels.tolist())) == list(range(n_clusters))
    assert labels.tolist() == canonical_labels(labels).tolist()


def test_repair_gives_a_partition_for_any_membership():
    rng = np.random.default_rng(0)
    for _ in range(300):
        k = int(rng.integers(1, 13))
        n_clusters = int(rng.integers(1, k + 1))
        n_sets = int(rng.integers(0, 8))
        membership = rng.random((n_sets, k)) < rng.uniform(0.0, 0.8)
        matrix = rng.normal(size=(k, k))
        matrix = matrix + matrix.T
        matrix[rng.random((k, k)) < 0.1] = np.nan
        assert_partition(repair_partition(membership, matrix, n_clusters), k, n_clusters)
        labels = rng.integers(-1, 4, size=k)
        assert_partition(repair_partition(labels, matrix, n_clusters), k, n_clusters)


def test_repair_keeps_an_overlapping_task_where_it_fits_best():
    matrix, _ = block_matrix([3, 3], within=1.0, between=-1.0)
    membership = np.array([[1, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=bool)
    assert repair_partition(membership, matrix, 2).tolist() == [0, 0, 0, 1, 1, 1]
    # Too many sets: the two closest merge; too few: the worst fit leaves its set.
    singletons = np.eye(6, dtype=bool)
    assert repair_partition(singletons, matrix, 2).tolist() == [0, 0, 0, 1, 1, 1]
    assert len(set(repair_partition(np.ones((1, 6), bool), matrix, 2).tolist())) == 2


def noisy_blocks():
    matrix, truth = block_matrix([4, 5, 3], noise=0.3, seed=1)
    order = np.random.default_rng(2).permutation(len(truth))
    return matrix[np.ix_(order, order)], truth[order]


@pytest.mark.parametrize(
    "method, rounding",
    [("spectral", "kmeans"), ("lloyd", "kmeans"), ("sdp", "kmeans"), ("sdp", "threshold")],
)
def test_methods_recover_noisy_blocks(method, rounding):
    matrix, truth = noisy_blocks()
    labels = partition(matrix, method, settings(3, rounding=rounding))
    assert adjusted_rand_score(truth, labels) == 1.0
    assert partition(matrix, method, settings(3, rounding=rounding)).tolist() == labels.tolist()
    # No partition beats the SDP relaxation's value on the same kernel.
    kernel = similarity_kernel(matrix, "profile")
    bound = np.sum(kernel * solve_sdp(kernel, 3))
    assert average_density(kernel, labels) <= bound + 1e-4


@pytest.mark.parametrize("method", METHODS)
def test_trivial_counts_for_every_method(method):
    matrix, _ = block_matrix([2, 2])
    assert partition(matrix, method, settings(1)).tolist() == [0, 0, 0, 0]
    assert partition(matrix, method, settings(4)).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("method", METHODS)
def test_choose_n_clusters_finds_the_planted_count(method):
    matrix, _ = noisy_blocks()
    result = choose_n_clusters(matrix, method, settings("auto"), candidates=range(2, 8))
    chosen, table = result.n_clusters, result.scan
    assert chosen == 3
    assert table["n_clusters"].tolist() == list(range(2, 8))
    assert table.loc[table["score"].idxmax(), "n_clusters"] == 3


def test_choose_n_clusters_edge_cases():
    matrix, _ = block_matrix([1, 1])
    result = choose_n_clusters(matrix, "lloyd", settings("auto"))
    chosen, table = result.n_clusters, result.scan
    assert chosen == 1 and table.empty
    assert result.labels.tolist() == [0, 0]
    # The default scan runs 2 .. k - 1 (here below max_clusters) ...
    table = choose_n_clusters(block_matrix([2, 3])[0], "spectral", settings("auto", "exp")).scan
    assert table["n_clusters"].tolist() == [2, 3, 4]
    # ... and stops at max_clusters.
    table = choose_n_clusters(block_matrix([2, 3])[0], "spectral",
                              settings("auto", "exp", max_clusters=3)).scan
    assert table["n_clusters"].tolist() == [2, 3]
    with pytest.raises(ValueError, match="candidates .* between 2 and k - 1 = 3"):
        choose_n_clusters(block_matrix([2, 2])[0], "lloyd", settings("auto"), candidates=[4])


def test_bad_names_raise_naming_the_key_and_the_choices():
    matrix, _ = block_matrix([2, 2])
    with pytest.raises(ValueError, match=r"clustering.method = 'kmeans'.*'spectral', 'lloyd'"):
        partition(matrix, "kmeans", settings(2))
    with pytest.raises(ValueError, match=r"clustering.rounding = 'round'.*'kmeans', 'threshold'"):
        partition(matrix, "sdp", settings(2, rounding="round"))
    with pytest.raises(ValueError, match="clustering.rounding = 'round'"):
        round_sdp_solution(np.eye(4), matrix, 2, "round", 0)
    with pytest.raises(ValueError, match="clustering.method = 'sdpp'"):
        choose_n_clusters(matrix, "sdpp", settings("auto"))
    with pytest.raises(ValueError, match="clustering.similarity = 'cosine'.*'profile', 'exp'"):
        settings(2, similarity="cosine")
    with pytest.raises(ValueError, match="clustering.n_clusters = 'many'; expected an int"):
        settings("many")


def test_sdp_falls_back_to_scs_and_reports_a_bad_status(monkeypatch):
    matrix, truth = block_matrix([3, 3], within=1.0, between=-1.0)
    solve = cp.Problem.solve
    solvers = []

    def clarabel_fails(problem, *args, solver=None, **kwargs):
        solvers.append(solver)
        if solver == cp.CLARABEL:
            raise cp.error.SolverError("forced failure")
        return solve(problem, *args, solver=solver, **kwargs)

    monkeypatch.setattr(cp.Problem, "solve", clarabel_fails)
    np.testing.assert_allclose(solve_sdp(matrix, 2), block_indicator(truth), atol=1e-3)
    assert solvers == [cp.CLARABEL, cp.SCS]

    def infeasible(problem, *args, solver=None, **kwargs):
        problem._status = cp.INFEASIBLE

    monkeypatch.setattr(cp.Problem, "solve", infeasible)
    with pytest.raises(RuntimeError, match="status 'infeasible'"):
        solve_sdp(matrix, 2)


@pytest.mark.parametrize("n_clusters, message", [
    (0, r"clustering.n_clusters = 0 is below 1 \(it must lie between 1 and the number of "
        r"tasks k = 4\)"),
    (5, r"clustering.n_clusters = 5 exceeds the number of tasks k = 4 \(it must lie between 1 "
        r"and k\)"),
])
def test_cluster_count_outside_one_to_k_raises_one_message(n_clusters, message):
    matrix, _ = block_matrix([2, 2])
    with pytest.raises(ValueError, match=message):
        check_n_clusters(n_clusters, 4)
    for method in METHODS:
        with pytest.raises(ValueError, match=message):
            partition(matrix, method, settings(n_clusters))
    with pytest.raises(ValueError, match=message):
        solve_sdp(matrix, n_clusters)
    check_n_clusters(1, 4)
    check_n_clusters(4, 4)


def count_sdp_solves(monkeypatch):
    calls = []
    solve = clustering.solve_sdp

    def counted(matrix, n_clusters):
        calls.append(n_clusters)
        return solve(matrix, n_clusters)

    monkeypatch.setattr(clustering, "solve_sdp", counted)
    return calls


def test_auto_solves_each_candidate_sdp_once_and_keeps_the_winners_labels(monkeypatch):
    matrix, truth = noisy_blocks()
    calls = count_sdp_solves(monkeypatch)
    result = cluster(matrix, "sdp", settings("auto", max_clusters=5))
    # one SDP per candidate 2..5: the chosen count is not solved again
    assert calls == [2, 3, 4, 5]
    assert result.n_clusters == 3 and result.scan["n_clusters"].tolist() == [2, 3, 4, 5]
    assert adjusted_rand_score(truth, result.labels) == 1.0
    # the labels a separate partition at the chosen count gives (the former two-step way)
    again = partition(matrix, "sdp", settings(3))
    assert calls == [2, 3, 4, 5, 3]
    assert result.labels.dtype == np.int64 and result.labels.tolist() == again.tolist()


def test_cluster_with_a_configured_count_is_partition():
    matrix, _ = noisy_blocks()
    result = cluster(matrix, "lloyd", settings(3))
    assert result.scan is None and result.n_clusters == 3
    assert result.labels.tolist() == partition(matrix, "lloyd", settings(3)).tolist()
    with pytest.raises(ValueError, match="cluster\\(\\) resolves 'auto'"):
        partition(matrix, "lloyd", settings("auto"))


def planted_subset_values(sizes, effect, count=600, size=5, noise=0.3, seed=0):
    """Random subsets of ``size`` tasks from planted groups of ``sizes``: the loss of a
    member task is 1 minus ``effect`` per partner of its group in the subset, plus normal
    noise of sd ``noise``. Returns membership (count, k), losses (NaN off-membership) and
    the planted labels."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(len(sizes)), sizes)
    membership = np.zeros((count, len(group)), dtype=bool)
    for row in membership:
        row[rng.choice(len(group), size, replace=False)] = True
    partners = membership.astype(float) @ (group[:, None] == group[None, :]) - 1.0
    losses = np.where(membership, 1.0 - effect * partners
                      + noise * rng.standard_normal(membership.shape), np.nan)
    return membership, losses, group


def test_fold_affinities_are_the_affinities_of_complementary_folds():
    membership, losses, _ = planted_subset_values([3, 3], effect=0.3, count=40, size=3)
    folds = fold_affinities(membership, losses, 4, seed=7)
    assert len(folds) == 4
    parts = np.array_split(np.random.default_rng(7).permutation(40), 4)
    rest = np.concatenate(parts[1:])
    np.testing.assert_array_equal(folds[0][1], affinity_matrices(membership[parts[0]],
                                                                 losses[parts[0]])[1])
    np.testing.assert_array_equal(folds[0][0], affinity_matrices(membership[rest],
                                                                 losses[rest])[1])
    # two folds: the two halves, each way round
    (a, b), (c, d) = fold_affinities(membership, losses, 2, seed=0)
    np.testing.assert_array_equal(a, d)
    np.testing.assert_array_equal(b, c)
    with pytest.raises(ValueError, match="1-fold split of 40 subsets"):
        fold_affinities(membership, losses, 1, seed=0)
    with pytest.raises(ValueError, match="21-fold split of 40 subsets"):
        fold_affinities(membership, losses, 21, seed=0)
    # the folds the stages ask for: never more than a design of m subsets can give
    assert [usable_folds(5, m) for m in (40, 10, 6, 4)] == [5, 5, 3, 2]
    assert len(fold_affinities(membership[:6], losses[:6], usable_folds(5, 6), seed=0)) == 3


def test_held_out_block_error_by_hand():
    fit = np.array([[0, 2.0, 0.0, np.nan], [2.0, 0, 1.0, 3.0], [0.0, 1.0, 0, 5.0],
                    [np.nan, 3.0, 5.0, 0]])
    held = np.array([[0, 1.0, 1.0, 1.0], [1.0, 0, np.nan, 2.0], [1.0, np.nan, 0, 4.0],
                     [1.0, 2.0, 4.0, 0]])
    labels = np.array([0, 0, 1, 1])
    # blocks: (0,0) pair 01 -> 2; (1,1) pair 23 -> 5; (0,1) pairs 02, 12, 13 (03 uncovered)
    # -> (0 + 1 + 3) / 3; held pairs 01, 02, 03, 13, 23 (12 uncovered)
    between = 4.0 / 3.0
    expected = np.mean([(1 - 2) ** 2, (1 - between) ** 2, (1 - between) ** 2,
                        (2 - between) ** 2, (4 - 5) ** 2])
    assert held_out_block_error(fit, held, labels) == pytest.approx(expected)
    # one cluster predicts the mean of every covered fit pair, (2 + 0 + 1 + 3 + 5) / 5
    one = np.mean([(value - 2.2) ** 2 for value in (1, 1, 1, 2, 4)])
    assert held_out_block_error(fit, held, np.zeros(4, dtype=np.int64)) == pytest.approx(one)


def test_held_out_count_finds_six_unequal_planted_groups():
    # (the silhouette on the same affinity also finds 6 here; on the planted_unequal
    # example's affinity it picks 4, README "The number of clusters")
    membership, losses, truth = planted_subset_values([8, 6, 5, 4, 4, 3], effect=0.4)
    full = affinity_matrices(membership, losses)[1]
    folds = fold_affinities(membership, losses, 5, seed=0)
    result = choose_n_clusters(full, "spectral", settings("auto", max_clusters=8), folds=folds)
    scan = result.scan
    assert result.n_clusters == 6
    assert adjusted_rand_score(truth, result.labels) == 1.0
    assert scan["n_clusters"].tolist() == list(range(1, 9))
    assert set(scan["criterion"]) == {"held_out_block_error"}
    # one cluster is the unit of the score; the planted count explains a third of it
    assert scan["score"].iloc[0] == pytest.approx(1.0) and scan["score_se"].iloc[0] == 0.0
    assert scan.loc[scan["n_clusters"] == 6, "score"].item() < 0.75
    # the chosen count's labels are those of the full affinity at that count
    assert result.labels.tolist() == partition(full, "spectral", settings(6)).tolist()


def test_held_out_count_is_one_cluster_on_noise():
    membership, losses, _ = planted_subset_values([8, 6, 5, 4, 4, 3], effect=0.0)
    full = affinity_matrices(membership, losses)[1]
    folds = fold_affinities(membership, losses, 5, seed=0)
    result = choose_n_clusters(full, "lloyd", settings("auto", max_clusters=4), folds=folds)
    assert result.n_clusters == 1 and result.labels.tolist() == [0] * 30
    # every finer partition predicts the held-out folds worse than their mean
    assert (result.scan["score"].iloc[1:] > 1.0).all()
    with pytest.raises(ValueError, match="1 fold"):
        choose_n_clusters(full, "lloyd", settings("auto"), folds=folds[:1])


def test_cluster_tasks_chooses_auto_held_out_and_writes_the_scan(tmp_path):
    membership, losses, truth = planted_subset_values([5, 4, 3], effect=0.4, count=300,
                                                      size=4)
    names = [f"t{i:02d}" for i in range(12)]
    subset, task = np.nonzero(membership)
    values = pd.DataFrame({"subset_id": subset, "task": np.array(names)[task], "split": "val",
                           "loss": losses[subset, task], "metric": 0.0,
                           "estimator": "gradient", "design": "random"})
    write_table(values, tmp_path / "values.parquet")
    write_table(affinity_table(values, names), tmp_path / "affinity.parquet")
    write_table(tasks_table(names, "binary", [[10, 10, 10]] * 12, truth.tolist()),
                tmp_path / "tasks.parquet")
    paths = [tmp_path / f"{method}.parquet" for method in ("lloyd", "spectral")]
    common = dict(affinity_path=tmp_path / "affinity.parquet",
                  tasks_path=tmp_path / "tasks.parquet", grouping_paths=paths,
                  objective_path=tmp_path / "objective.parquet",
                  scan_path=tmp_path / "scan.parquet", source="higher_order",
                  methods=["lloyd", "spectral"])
    cluster_tasks(**common, settings=settings("auto", max_clusters=5),
                  values_path=tmp_path / "values.parquet", auto_folds=3)
    scan = read_table(tmp_path / "scan.parquet", CLUSTER_SCAN)
    assert scan["method"].tolist() == ["lloyd"] * 5 + ["spectral"] * 5
    assert scan["n_clusters"].tolist() == [1, 2, 3, 4, 5] * 2
    assert set(scan["criterion"]) == {"held_out_block_error"}
    assert scan.loc[scan["chosen"], "n_clusters"].tolist() == [3, 3]
    objective = read_table(tmp_path / "objective.parquet", {"ari_vs_planted": "float"})
    assert objective["ari_vs_planted"].tolist() == [1.0, 1.0]
    # a configured count: one "configured" row per method, no values needed
    cluster_tasks(**common, settings=settings(3))
    scan = read_table(tmp_path / "scan.parquet", CLUSTER_SCAN)
    assert scan["criterion"].tolist() == ["configured"] * 2 and scan["chosen"].all()
    assert scan["n_clusters"].tolist() == [3, 3]


def test_adjusted_rand_index_equals_scikit_learn_s():
    from sklearn.metrics import adjusted_rand_score

    from taskgroup.group.groupings import adjusted_rand_index

    rng = np.random.default_rng(0)
    for n, groups_a, groups_b in [(12, 3, 4), (30, 5, 5), (7, 7, 2), (5, 1, 1), (9, 9, 9)]:
        a, b = rng.integers(0, groups_a, n), rng.integers(0, groups_b, n)
        assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
        assert adjusted_rand_index(a, a) == 1.0
    assert adjusted_rand_index(["x", "x", "y"], [2, 2, 0]) == 1.0  # labels' values do not matter
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="different shapes"):
        adjusted_rand_index([0, 1], [0, 1, 2])
