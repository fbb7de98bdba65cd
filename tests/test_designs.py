import math

import numpy as np
import pandas as pd
import pytest

from taskgroup.data.designs import design_table, singletons_and_pairs


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
