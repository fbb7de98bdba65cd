"""The clustering SDP above CLARABEL_MAX_TASKS: SCS against Clarabel, feasibility,
determinism, a size Clarabel cannot do cheaply, and the automatic choice by k."""

import logging
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest
import yaml
from sklearn.metrics import adjusted_rand_score

from taskgroup.group.clustering import (
    CLARABEL_MAX_TASKS,
    round_sdp_solution,
    sdp_solver,
    sdp_violation,
    solve_sdp,
)

ROOT = Path(__file__).resolve().parents[1]


def planted_blocks(sizes, within, between, noise, seed):
    """Symmetric matrix: ``within`` inside blocks of the given sizes, ``between`` across,
    plus symmetric Gaussian noise of std ``noise``; and the (k,) block labels."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    rng = np.random.default_rng(seed)
    jitter = rng.normal(scale=noise, size=(len(labels), len(labels)))
    matrix = np.where(labels[:, None] == labels[None, :], within, between)
    return matrix + (jitter + jitter.T) / 2.0, labels


def random_blocks(k, n_blocks, noise, seed):
    """Blocks of random sizes with a random strength per block and random cross-block
    levels (symmetric), plus noise; and the block labels."""
    rng = np.random.default_rng(seed)
    labels = np.sort(rng.integers(0, n_blocks, size=k))
    levels = rng.uniform(-0.5, 0.3, size=(n_blocks, n_blocks))
    levels = (levels + levels.T) / 2.0
    np.fill_diagonal(levels, rng.uniform(0.6, 1.5, size=n_blocks))
    jitter = rng.normal(scale=noise, size=(k, k))
    return levels[labels][:, labels] + (jitter + jitter.T) / 2.0, labels


CASES = {
    "planted k=20": (planted_blocks([5, 5, 5, 5], 1.0, 0.0, 0.5, 0), 4),
    "planted k=30 unequal": (planted_blocks([12, 8, 6, 4], 1.0, -0.2, 0.8, 1), 4),
    "planted k=40": (planted_blocks([8] * 5, 1.0, 0.0, 1.0, 2), 5),
    "random k=24": (random_blocks(24, 3, 0.4, 3), 3),
    "random k=36": (random_blocks(36, 5, 0.5, 4), 5),
    "random k=40": (random_blocks(40, 6, 0.6, 5), 6),
}


@pytest.mark.parametrize("case", list(CASES))
def test_scs_matches_clarabel_in_objective_and_rounded_partitions(case):
    (matrix, _), n_clusters = CASES[case]
    reference = solve_sdp(matrix, n_clusters, cp.CLARABEL)
    scaled = solve_sdp(matrix, n_clusters, cp.SCS)
    objective, expected = np.sum(matrix * scaled), np.sum(matrix * reference)
    assert abs(objective - expected) <= 0.005 * abs(expected)
    for rounding in ("kmeans", "threshold"):
        labels = round_sdp_solution(scaled, matrix, n_clusters, rounding, 0)
        assert labels.tolist() == round_sdp_solution(
            reference, matrix, n_clusters, rounding, 0
        ).tolist()


def test_scs_solution_is_feasible_and_deterministic():
    (matrix, _), n_clusters = CASES["random k=36"]
    solution = solve_sdp(matrix, n_clusters, cp.SCS)
    assert solution.min() >= 0.0 and np.array_equal(solution, solution.T)
    np.testing.assert_allclose(solution.sum(axis=1), 1.0, atol=1e-3)
    assert np.trace(solution) == pytest.approx(n_clusters, abs=1e-3)
    assert np.linalg.eigvalsh(solution)[0] >= -1e-3
    assert sdp_violation(solution, n_clusters) <= 1e-3
    assert np.array_equal(solve_sdp(matrix, n_clusters, cp.SCS), solution)


def test_standard_output_is_restored_after_a_solve_that_raises(capfd):
    from taskgroup.group.clustering import _SCS_PROGRESS, _solver_rows_to_log

    with pytest.raises(RuntimeError, match="solver failed"):
        with _solver_rows_to_log(_SCS_PROGRESS):
            raise RuntimeError("solver failed")
    print("after the solve")
    assert "after the solve" in capfd.readouterr().out


def test_violation_by_hand():
    # X = I / 2 for k = 2: row sums 0.5, trace 1 against n_clusters 1 -> 0.5 off the rows
    assert sdp_violation(np.eye(2) / 2.0, 1) == pytest.approx(0.5)
    # a partition's indicator X is feasible
    indicator = np.kron(np.eye(2), np.full((2, 2), 0.5))
    assert sdp_violation(indicator, 2) == pytest.approx(0.0, abs=1e-12)
    assert sdp_violation(np.full((2, 2), 0.5), 1) == 0.0
    # a negative entry, and a negative eigenvalue, count
    assert sdp_violation(np.array([[1.2, -0.2], [-0.2, 1.2]]), 2.4) == pytest.approx(0.2)
    assert sdp_violation(np.array([[0.0, 1.0], [1.0, 0.0]]), 0.0) == pytest.approx(1.0)


def test_planted_blocks_beyond_clarabel_are_recovered_by_scs(caplog):
    matrix, truth = planted_blocks([15] * 10, 1.0, 0.0, 0.5, 6)
    assert sdp_solver(150) == cp.SCS
    with caplog.at_level(logging.INFO, logger="taskgroup.group.clustering"):
        solution = solve_sdp(matrix, 10)
    assert any("SCS ended 'optimal'" in message and "max constraint violation" in message
               for message in caplog.messages)
    # SCS's progress table reached the log as it ran: its header, then a row at iteration
    # 0 and every 250 (iteration | residuals, gap, objective, scale, seconds)
    progress = [message for message in caplog.messages if message.startswith("SDP: SCS ")
                and "|" in message]
    assert "iter | pri res" in progress[0]
    assert [row.split("|")[0].split()[-1] for row in progress[1:3]] == ["0", "250"]
    assert not any("CVXPY" in message for message in caplog.messages)
    assert sdp_violation(solution, 10) <= 1e-3
    labels = round_sdp_solution(solution, matrix, 10, "kmeans", 0)
    assert adjusted_rand_score(truth, labels) >= 0.95


def test_the_automatic_choice_keeps_the_shipped_configs_on_clarabel():
    assert [sdp_solver(k) for k in (2, CLARABEL_MAX_TASKS)] == [cp.CLARABEL] * 2
    assert sdp_solver(CLARABEL_MAX_TASKS + 1) == cp.SCS
    for path in ("tests/smoke/config.yaml", "config/config.yaml"):
        section = yaml.safe_load((ROOT / path).read_text())["dataset"]["planted"]
        per_group = section["tasks_per_group"]
        k = section["n_groups"] * per_group if isinstance(per_group, int) else sum(per_group)
        assert k <= 30 and sdp_solver(k) == cp.CLARABEL


def test_an_unknown_solver_raises():
    matrix, _ = planted_blocks([2, 2], 1.0, 0.0, 0.0, 0)
    with pytest.raises(ValueError, match="SDP solver 'MOSEK'; expected 'CLARABEL' or 'SCS'"):
        solve_sdp(matrix, 2, "MOSEK")


def test_the_solver_and_status_names_are_cvxpy_s():
    from taskgroup.group import clustering

    assert (clustering.CLARABEL, clustering.SCS) == (cp.CLARABEL, cp.SCS)
    assert clustering.ACCEPTED_STATUSES == (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
