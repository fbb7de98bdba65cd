import numpy as np
import pandas as pd
import pytest

from taskgroup.group.affinity import (
    affinity_matrices,
    affinity_table,
    pairwise_matrices,
    square,
    transfer_matrices,
)
from taskgroup.group.surrogates import pairwise_transfer

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


def pair_values():
    """Tasks a, b, c: singleton a twice, pair {a, b} twice, every other singleton and pair
    once, and a triple that must be ignored."""
    rows = [
        (0, "a", 0.48), (1, "b", 0.40), (2, "c", 0.60), (3, "a", 0.52),
        (4, "a", 0.45), (4, "b", 0.42),
        (5, "a", 0.55), (5, "c", 0.58),
        (6, "b", 0.39), (6, "c", 0.61),
        (7, "b", 0.44), (7, "a", 0.47),
        (8, "a", 9.0), (8, "b", 9.0), (8, "c", 9.0),
    ]
    frame = pd.DataFrame(rows, columns=["subset_id", "task", "loss"])
    return frame.assign(split="val", metric=0.5, estimator="finetune")


def test_pair_transfer_averages_repeated_subsets():
    alone, together, transfer = transfer_matrices(pair_values(), NAMES)
    # f_a({a}) = (0.48 + 0.52) / 2; f_a({a, b}) = (0.45 + 0.47) / 2, f_b({a, b}) = (0.42 + 0.44) / 2
    np.testing.assert_allclose(alone, [0.5, 0.4, 0.6])
    expected_with = np.array(
        [[np.nan, 0.46, 0.55], [0.43, np.nan, 0.39], [0.58, 0.61, np.nan]]
    )
    np.testing.assert_allclose(together, expected_with)
    np.testing.assert_allclose(transfer, expected_with - np.array([[0.5], [0.4], [0.6]]))
    np.testing.assert_allclose(transfer[0, 1], -0.04)
    # The pairwise affinity and the surrogates' ground truth read the same numbers.
    raw, _ = pairwise_matrices(pair_values(), NAMES)
    np.testing.assert_allclose(raw, np.nan_to_num(transfer, nan=0.0))
    table = pairwise_transfer(pair_values(), NAMES)
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(table["transfer"], transfer[off])
    np.testing.assert_allclose(table["loss_with"], together[off])


def test_pair_transfer_names_what_is_missing():
    values = pair_values()
    only_singletons = values[values["subset_id"] <= 3]
    with pytest.raises(ValueError, match=r"3 pair\(s\) without 'val' losses of both members, "
                       r"e.g. \[\('a', 'b'\), \('a', 'c'\), \('b', 'c'\)\] "
                       r"\(no value for a trained with b\)"):
        transfer_matrices(only_singletons, NAMES)
    with pytest.raises(ValueError, match=r"subset values name tasks \['d'\]"):
        transfer_matrices(pd.concat([values, values.iloc[:1].assign(task="d")]), NAMES)
    with pytest.raises(ValueError, match="no rows with split == 'test'"):
        transfer_matrices(values, NAMES, split="test")
