"""The pair design above subsets.pairs.sample_above_tasks: a sample of pairs, and the
pairwise affinity and the negative-transfer scoring that read it."""

import itertools

import numpy as np
import pandas as pd
import pytest

from taskgroup.config import pair_design_size, pair_sample
from taskgroup.data.designs import (
    PairSample,
    design_table,
    sampled_pair_count,
    sampled_pairs,
    singletons_and_pairs,
    singletons_and_sampled_pairs,
)
from taskgroup.group.affinity import pairwise_affinity_table, pairwise_matrices, square
from taskgroup.group.surrogates import pairwise_transfer, score_negative_transfer


def test_every_task_is_in_per_task_distinct_pairs():
    for k, per_task in ((7, 2), (30, 4), (61, 20), (500, 20)):
        pairs = sampled_pairs(k, PairSample(per_task=per_task, seed=3))
        assert len(pairs) == len(set(pairs)) == sampled_pair_count(k, per_task) == k * per_task // 2
        assert all(0 <= i < j < k for i, j in pairs)
        assert pairs == sorted(pairs)
        degree = np.bincount(np.ravel(pairs), minlength=k)
        np.testing.assert_array_equal(degree, per_task)


def test_the_sample_is_seeded_and_connects_every_task():
    first = sampled_pairs(40, PairSample(per_task=2, seed=0))
    assert first == sampled_pairs(40, PairSample(per_task=2, seed=0))
    assert first != sampled_pairs(40, PairSample(per_task=2, seed=1))
    # per_task 2 is one cycle through all 40 tasks: walking the pairs reaches every task
    neighbours = {task: set() for task in range(40)}
    for i, j in first:
        neighbours[i].add(j)
        neighbours[j].add(i)
    seen, frontier = {0}, [0]
    while frontier:
        for other in neighbours[frontier.pop()] - seen:
            seen.add(other)
            frontier.append(other)
    assert seen == set(range(40))


def test_each_pair_is_about_equally_likely_over_seeds():
    k, per_task, draws = 12, 4, 1500
    hits = np.zeros((k, k))
    for seed in range(draws):
        for i, j in sampled_pairs(k, PairSample(per_task=per_task, seed=seed)):
            hits[i, j] += 1
    frequency = hits[np.triu_indices(k, 1)] / draws
    # every pair has probability per_task / (k - 1) = 4 / 11
    np.testing.assert_allclose(frequency, per_task / (k - 1), atol=0.05)


def test_bad_samples_are_rejected():
    with pytest.raises(ValueError, match="even and at least 2"):
        sampled_pairs(10, PairSample(per_task=3, seed=0))
    with pytest.raises(ValueError, match="value every pair instead"):
        sampled_pairs(10, PairSample(per_task=10, seed=0))


def test_singletons_come_first_then_the_sampled_pairs():
    sample = PairSample(per_task=2, seed=5)
    design = singletons_and_sampled_pairs(6, sample)
    assert design[:6] == [(i,) for i in range(6)]
    assert design[6:] == sampled_pairs(6, sample)


def config_with(sample_above_tasks=60, per_task=20, seed=0):
    return {
        "subsets": {
            "pairs": {"sample_above_tasks": sample_above_tasks, "per_task": per_task, "seed": seed}
        }
    }


def test_pairs_are_sampled_only_above_the_threshold_and_below_every_pair():
    config = config_with()
    # the smoke (k = 9) and default (k = 30) configs keep every pair
    for k in (9, 30, 60):
        assert pair_sample(config, k) is None
        assert pair_design_size(k, None) == k + k * (k - 1) // 2
    assert pair_sample(config, 61) == {"per_task": 20, "seed": 0}
    assert pair_design_size(61, pair_sample(config, 61)) == 61 + 61 * 10
    assert pair_design_size(500, pair_sample(config, 500)) == 5500
    # a sample as large as every pair is no sample
    assert pair_sample(config_with(sample_above_tasks=5, per_task=20), 21) is None
    assert pair_sample(config_with(sample_above_tasks=5, per_task=20), 22) is not None


def losses_of(design, names, transfer, alone):
    """Validation losses of a pair design: f_i({i}) = alone[i], f_i({i, j}) = alone[i] +
    transfer[i, j]."""
    table = design_table(design, names)
    rows = []
    for subset_id, members in table.groupby("subset_id")["task"]:
        indices = [names.index(name) for name in members]
        for i in indices:
            others = [j for j in indices if j != i]
            loss = alone[i] + (transfer[i, others[0]] if others else 0.0)
            rows.append((subset_id, names[i], loss))
    frame = pd.DataFrame(rows, columns=["subset_id", "task", "loss"])
    return frame.assign(split="val", metric=0.5, estimator="gradient", design="pairs")


def test_unsampled_pairs_are_missing_not_zero():
    k = 8
    names = [f"t{i}" for i in range(k)]
    rng = np.random.default_rng(0)
    transfer = rng.normal(size=(k, k))
    alone = rng.uniform(0.3, 0.7, size=k)
    sample = PairSample(per_task=4, seed=2)
    sampled = losses_of(singletons_and_sampled_pairs(k, sample), names, transfer, alone)
    full = losses_of(singletons_and_pairs(k), names, transfer, alone)

    with pytest.raises(ValueError, match=r"pair\(s\) without 'val' losses"):
        pairwise_matrices(sampled, names)
    raw, normalized = pairwise_matrices(sampled, names, every_pair=False)
    in_sample = np.zeros((k, k), dtype=bool)
    for i, j in sampled_pairs(k, sample):
        in_sample[i, j] = in_sample[j, i] = True
    off = ~np.eye(k, dtype=bool)
    np.testing.assert_allclose(raw[in_sample], transfer[in_sample])
    assert np.isnan(raw[off & ~in_sample]).all() and np.isnan(normalized[off & ~in_sample]).all()
    np.testing.assert_array_equal(np.diag(raw), 0.0)
    np.testing.assert_array_equal(np.diag(normalized), 0.0)
    # each target's row is z-scored over its sampled pairs only
    flipped = np.where(in_sample, -transfer, np.nan)
    directed = (flipped - np.nanmean(flipped, axis=1, keepdims=True)) / np.nanstd(
        flipped, axis=1, keepdims=True
    )
    np.testing.assert_allclose(normalized[in_sample], ((directed + directed.T) / 2)[in_sample])

    table = pairwise_affinity_table(sampled, names, every_pair=False)
    counts = square(table, names, "n_subsets")
    np.testing.assert_array_equal(counts, np.where(off & ~in_sample, 0, 1))
    # on the full design nothing changes: every count 1, no NaN
    full_table = pairwise_affinity_table(full, names)
    assert (full_table["n_subsets"] == 1).all() and not full_table["normalized"].isna().any()
    np.testing.assert_allclose(square(full_table, names, "raw")[off], transfer[off])


def test_negative_transfer_is_scored_on_the_sampled_pairs_only():
    k = 8
    names = [f"t{i}" for i in range(k)]
    rng = np.random.default_rng(1)
    transfer = rng.normal(size=(k, k))
    alone = np.full(k, 0.5)
    sample = PairSample(per_task=2, seed=0)
    values = losses_of(singletons_and_sampled_pairs(k, sample), names, transfer, alone)
    truth = pairwise_transfer(values, names, every_pair=False)
    expected = sorted(
        itertools.chain.from_iterable(
            ((names[i], names[j]), (names[j], names[i])) for i, j in sampled_pairs(k, sample)
        )
    )
    assert sorted(zip(truth["target"], truth["source"])) == expected
    np.testing.assert_allclose(
        truth["transfer"],
        [transfer[names.index(t), names.index(s)]
         for t, s in zip(truth["target"], truth["source"])],
    )
    # a coefficient per ordered pair that predicts every pair harmful: the scored pairs are
    # the 2 k sampled ones, tp = the truly negative among them
    coefficients = pd.DataFrame(
        [(t, s, 1.0) for t in names for s in names if s != t],
        columns=["target", "source", "coefficient"],
    )
    scores = score_negative_transfer(coefficients, truth, 0.0)
    overall = scores[scores["level"] == "overall"].iloc[0]
    assert overall["n_pairs"] == 2 * len(sampled_pairs(k, sample)) == 2 * k
    assert overall["tp"] == int(truth["negative"].sum())
    assert overall["fn"] == 0 and overall["tn"] == 0
