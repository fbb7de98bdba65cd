import math

import numpy as np
import pandas as pd
import pytest

from taskgroup.data.designs import design_table, forward_selection, singletons_and_pairs


def test_pair_design_lists_singletons_then_pairs_in_lexicographic_order():
    assert singletons_and_pairs(4) == [
        (0,), (1,), (2,), (3,),
        (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3),
    ]
    for k in (1, 2, 7, 30):
        design = singletons_and_pairs(k)
        assert len(design) == k + k * (k - 1) // 2 == k + math.comb(k, 2)
        assert len(set(design)) == len(design)
    with pytest.raises(ValueError, match="at least one task"):
        singletons_and_pairs(0)


def test_design_table_is_the_long_subsets_table():
    table = design_table(singletons_and_pairs(3), ["a", "b", "c"])
    expected = pd.DataFrame(
        {
            "subset_id": np.array([0, 1, 2, 3, 3, 4, 4, 5, 5], dtype=np.int64),
            "task": ["a", "b", "c", "a", "b", "a", "c", "b", "c"],
        }
    )
    pd.testing.assert_frame_equal(table, expected)
    with pytest.raises(ValueError, match=r"outside 0..2"):
        design_table([(0, 3)], ["a", "b", "c"])


THETA = {1: -0.3, 2: 0.2, 3: -0.1, 4: 0.0, 5: -0.05, 6: 0.4}


def additive_oracle(calls):
    def value(batch):
        calls.append(list(batch))
        return np.array([1.0 + sum(THETA[j] for j in subset if j != 0) for subset in batch])

    return value


def test_forward_selection_adds_exactly_the_helpful_sources_then_stops():
    calls = []
    path = forward_selection(0, [1, 2, 3, 4, 5, 6], additive_oracle(calls), max_size=10,
                             min_improvement=0.02)
    steps = [step for step, _, _ in path]
    subsets = [subset for _, subset, _ in path]
    losses = np.array([loss for _, _, loss in path])
    assert steps == [0, 1, 2, 3]
    assert subsets == [(0,), (0, 1), (0, 1, 3), (0, 1, 3, 5)]
    np.testing.assert_allclose(losses, [1.0, 0.7, 0.6, 0.55])
    # one call for {target}, then one batch per step: 6, 5, 4 candidates, and the final
    # rejected batch of 3 (sources 2, 4, 6 would not lower the loss)
    assert [len(batch) for batch in calls] == [1, 6, 5, 4, 3]
    assert calls[1] == [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 6)]


def test_forward_selection_respects_max_size_and_min_improvement():
    path = forward_selection(0, [1, 2, 3, 4, 5, 6], additive_oracle([]), max_size=2)
    assert [subset for _, subset, _ in path] == [(0,), (0, 1)]
    # improvement of source 5 (0.05) is not more than 0.05: it is not added
    path = forward_selection(0, [1, 2, 3, 4, 5, 6], additive_oracle([]), max_size=10,
                             min_improvement=0.05)
    assert path[-1][1] == (0, 1, 3)
    path = forward_selection(0, [1, 2, 3, 4, 5, 6], additive_oracle([]), max_size=1)
    assert path == [(0, (0,), 1.0)]


def test_forward_selection_rejects_bad_inputs():
    with pytest.raises(ValueError, match="the target 0 is among the candidates"):
        forward_selection(0, [0, 1], additive_oracle([]), max_size=3)
    with pytest.raises(ValueError, match=r"returned 1 losses for 6 subsets"):
        forward_selection(0, [1, 2, 3, 4, 5, 6], lambda batch: [1.0], max_size=3)
