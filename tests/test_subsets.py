import itertools
import math

import numpy as np
import pandas as pd
import pytest

from taskgroup.data.designs import (
    chunk_of,
    expected_pair_count,
    n_chunks,
    pair_counts,
    random_design,
)

NAMES = [f"t{i}" for i in range(8)]


def test_subsets_are_distinct_of_fixed_size_and_seeded():
    table = random_design(NAMES, size=3, count=20, seed=1)
    assert table["subset_id"].nunique() == 20
    members = table.groupby("subset_id")["task"].apply(tuple)
    assert (members.map(len) == 3).all()
    assert members.nunique() == 20
    pd.testing.assert_frame_equal(table, random_design(NAMES, 3, 20, seed=1))
    assert not table.equals(random_design(NAMES, 3, 20, seed=2))


def test_near_exhaustive_design_enumerates_every_subset():
    table = random_design(NAMES, size=7, count=8, seed=0)
    members = set(table.groupby("subset_id")["task"].apply(tuple))
    assert members == set(itertools.combinations(NAMES, 7))


def test_impossible_designs_fail_with_the_key_name():
    with pytest.raises(ValueError, match=r"subsets.size \(alpha\) = 9"):
        random_design(NAMES, size=9, count=1, seed=0)
    with pytest.raises(ValueError, match=r"subsets.count \(m\) = 57 exceeds the 56"):
        random_design(NAMES, size=3, count=57, seed=0)


def test_pair_counts_match_a_direct_count():
    table = random_design(NAMES, size=4, count=30, seed=5)
    counts = pair_counts(table, NAMES).set_index(["task_i", "task_j"])["n_subsets"]
    groups = table.groupby("subset_id")["task"].apply(set)
    for first, second in itertools.product(NAMES, repeat=2):
        direct = sum(1 for members in groups if {first, second} <= members)
        assert counts[(first, second)] == direct


def test_mean_pair_coverage_equals_its_expectation():
    table = random_design(NAMES, size=4, count=60, seed=0)
    counts = pair_counts(table, NAMES)
    off_diagonal = counts.loc[counts["task_i"] != counts["task_j"], "n_subsets"]
    # Every subset holds exactly a (a - 1) ordered pairs, so the mean is exact.
    assert off_diagonal.mean() == pytest.approx(expected_pair_count(8, 4, 60))


def test_chunks_cover_every_subset_once():
    ids = np.arange(23)
    assert n_chunks(23, 10) == 3
    assert np.bincount(chunk_of(ids, 10)).tolist() == [10, 10, 3]
    assert n_chunks(20, 10) == math.ceil(20 / 10)
