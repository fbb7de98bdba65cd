import numpy as np
import pandas as pd
import pytest

from taskgroup.group.affinity import affinity_matrices, affinity_table, square

NAMES = ["a", "b", "c"]


def values_table():
    # subset 0 = {a, b}, subset 1 = {a, c}, subset 2 = {a, b, c}
    rows = [
        (0, "a", 1.0), (0, "b", 2.0),
        (1, "a", 3.0), (1, "c", 4.0),
        (2, "a", 5.0), (2, "b", 6.0), (2, "c", 8.0),
    ]
    table = pd.DataFrame(rows, columns=["subset_id", "task", "loss"])
    table["split"] = "val"
    table["metric"] = 0.5
    table["estimator"] = "finetune"
    return table


def test_raw_affinity_and_counts_by_hand():
    table = affinity_table(values_table(), NAMES)
    raw = square(table, NAMES, "raw")
    counts = square(table, NAMES, "n_subsets")
    # T_ab = mean f_a over subsets with a and b = (1 + 5) / 2; T_aa = (1 + 3 + 5) / 3
    expected = np.array([[3.0, 3.0, 4.0], [4.0, 4.0, 6.0], [6.0, 8.0, 6.0]])
    np.testing.assert_allclose(raw, expected)
    np.testing.assert_array_equal(counts, [[3, 2, 2], [2, 2, 1], [2, 1, 2]])


def test_normalized_affinity_by_hand():
    table = affinity_table(values_table(), NAMES)
    normalized = square(table, NAMES, "normalized")
    mean = np.array([3.0, 4.0, 6.0])
    spread = np.array([np.std([1, 3, 5]), np.std([2, 6]), np.std([4, 8])])
    raw = np.array([[3.0, 3.0, 4.0], [4.0, 4.0, 6.0], [6.0, 8.0, 6.0]])
    directed = -(raw - mean[:, None]) / spread[:, None]
    np.testing.assert_allclose(normalized, (directed + directed.T) / 2)
    np.testing.assert_allclose(normalized, normalized.T)
    np.testing.assert_allclose(np.diag(normalized), 0.0, atol=1e-12)


def test_uncovered_pairs_are_nan():
    membership = np.array([[True, True, False], [True, False, False]])
    losses = np.array([[1.0, 2.0, np.nan], [3.0, np.nan, np.nan]])
    raw, normalized, counts = affinity_matrices(membership, losses)
    assert counts[0, 2] == 0 and np.isnan(raw[0, 2]) and np.isnan(normalized[0, 2])
    assert raw[0, 1] == pytest.approx(1.0)


def test_missing_loss_of_a_member_is_an_error():
    membership = np.array([[True, True]])
    losses = np.array([[1.0, np.nan]])
    with pytest.raises(ValueError, match="no loss"):
        affinity_matrices(membership, losses)
