"""Groupings, group keys and the summary table, on hand-made tables."""

import numpy as np
import pandas as pd
import pytest

from taskgroup.data.designs import design_table, singletons_and_pairs
from taskgroup.group.affinity import pairwise_matrices
from taskgroup.group.groupings import group_key, group_keys, random_partition
from taskgroup.report.evaluation import (
    per_task_table,
    summary_table,
    variant_comparison,
    variant_task_changes,
)

TASKS = pd.DataFrame(
    {
        "task": ["a", "b", "c", "d"],
        "task_index": [0, 1, 2, 3],
        "task_type": "binary",
        "n_train": 10, "n_val": 10, "n_test": 10,
        "planted_group": pd.array([0, 0, 1, 1], dtype="Int64"),
    }
)


def test_group_key_ignores_order_and_differs_between_sets():
    assert group_key(["b", "a"]) == group_key(["a", "b"])
    assert group_key(["a", "b"]) != group_key(["a", "c"])
    assert len(group_key(["a"])) == 16


def test_random_partition_keeps_group_sizes_and_is_seeded():
    reference = pd.DataFrame({"task": list("abcdefg"), "group": [0, 0, 0, 1, 1, 2, 2]})
    first = random_partition(reference, seed=3)
    assert sorted(first["group"].value_counts()) == [2, 2, 3]
    assert first.equals(random_partition(reference, seed=3))
    assert not first.equals(random_partition(reference, seed=4))


def results_for(groupings, metric_of, variant="plain", loss_weight=1.0):
    """Group results for every distinct group of ``groupings``: metric_of(size, seed,
    task)."""
    rows = []
    for grouping in groupings.values():
        for key, members in group_keys(grouping).groupby("group_key")["task"]:
            for seed in (0, 1):
                for task in members:
                    for split in ("val_stop", "val_select", "test"):
                        rows.append({"variant": variant, "group_key": key, "seed": seed,
                                     "task": task, "split": split, "loss": 0.5,
                                     "metric": metric_of(len(members), seed, task),
                                     "loss_weight": loss_weight, "n_examples": 5})
    return pd.DataFrame(rows).drop_duplicates(["group_key", "seed", "task", "split"])


def test_summary_pairs_seeds_against_naive_mtl_and_flags_gains_within_the_spread():
    groupings = {
        "higher_order-sdp": pd.DataFrame({"task": list("abcd"), "group": [0, 0, 1, 1]}),
        "naive_mtl": pd.DataFrame({"task": list("abcd"), "group": [0, 0, 0, 0]}),
        "stl": pd.DataFrame({"task": list("abcd"), "group": [0, 1, 2, 3]}),
        "random_0": pd.DataFrame({"task": list("abcd"), "group": [0, 1, 0, 1]}),
    }
    # pairs of 2 tasks score 0.8 (+0.1 on seed 1), all four 0.7, single tasks 0.7 +- 0.05
    def metric_of(size, seed, task):
        if size == 2:
            return 0.8 + 0.1 * seed
        if size == 4:
            return 0.7
        return 0.7 + (0.05 if seed else -0.05)

    per_task = per_task_table(groupings, results_for(groupings, metric_of))
    assert len(per_task) == 4 * 2 * 4
    summary = summary_table(per_task, groupings, TASKS).set_index("grouping")
    clustered = summary.loc["higher_order-sdp"]
    assert clustered["mean_test_metric"] == pytest.approx(0.85)
    assert clustered["sd_test_metric"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert clustered["gain_vs_naive_mtl"] == pytest.approx(0.15)
    assert clustered["ari_vs_planted"] == 1.0
    assert not clustered["within_spread"]
    stl = summary.loc["stl"]
    assert stl["gain_vs_naive_mtl"] == pytest.approx(0.0)
    assert bool(stl["within_spread"])  # gains of -0.05 and +0.05: noise
    assert pd.isna(summary.loc["naive_mtl", "within_spread"])
    pooled = summary.loc["random_mean"]
    assert pooled["mean_test_metric"] == pytest.approx(summary.loc["random_0",
                                                                   "mean_test_metric"])
    assert summary.loc["random_0", "kind"] == "random"
    assert clustered["affinity_source"] == "higher_order" and clustered["method"] == "sdp"


def test_variants_are_compared_with_plain_training_paired_by_seed():
    groupings = {
        "higher_order-sdp": pd.DataFrame({"task": list("abcd"), "group": [0, 0, 1, 1]}),
        "naive_mtl": pd.DataFrame({"task": list("abcd"), "group": [0, 0, 0, 0]}),
        "random_0": pd.DataFrame({"task": list("abcd"), "group": [0, 1, 0, 1]}),
    }
    plain = results_for(groupings, lambda size, seed, task: 0.7 + 0.1 * seed)
    # reweighted: task a +0.04 on both seeds, task b -0.02 on seed 0, others unchanged
    shifts = {("a", 0): 0.04, ("a", 1): 0.04, ("b", 0): -0.02}
    reweighted = results_for(
        groupings, lambda size, seed, task: 0.7 + 0.1 * seed + shifts.get((task, seed), 0.0),
        variant="reweighted", loss_weight=0.5,
    )
    per_task = per_task_table(groupings, pd.concat([plain, reweighted]))
    assert len(per_task) == 3 * 2 * 2 * 4  # groupings x variants x seeds x tasks
    assert set(per_task.query("variant == 'reweighted'")["loss_weight"]) == {0.5}
    summary = summary_table(per_task, groupings, TASKS)
    assert len(summary) == 2 * (3 + 1)  # per variant: three groupings and random_mean
    reweighted_mtl = summary.query("variant == 'reweighted' and grouping == 'naive_mtl'")
    assert reweighted_mtl["mean_test_metric"].item() == pytest.approx(0.75 + 0.06 / 8)

    changes = variant_task_changes(per_task).set_index(["grouping", "task"])
    assert changes.loc[("naive_mtl", "a"), "change"] == pytest.approx(0.04)
    assert changes.loc[("naive_mtl", "b"), "change"] == pytest.approx(-0.01)
    assert changes.loc[("naive_mtl", "c"), "change"] == pytest.approx(0.0)
    comparison = variant_comparison(per_task).set_index("grouping")
    row = comparison.loc["naive_mtl"]
    assert row["variant"] == "reweighted" and row["n_seeds"] == 2
    # per-seed changes of the mean over tasks: (0.04 - 0.02) / 4 and 0.04 / 4
    assert row["change"] == pytest.approx(np.mean([0.005, 0.01]))
    assert row["sd_change"] == pytest.approx(np.std([0.005, 0.01], ddof=1))
    assert not row["within_spread"]
    assert (row["n_tasks_better"], row["n_tasks_worse"]) == (1, 1)
    assert row["baseline_test_metric"] == pytest.approx(0.75)


def test_per_task_table_names_a_task_without_results():
    groupings = {"naive_mtl": pd.DataFrame({"task": list("abcd"), "group": [0, 0, 0, 0]})}
    results = results_for(groupings, lambda *_: 0.5)
    with pytest.raises(
        ValueError, match=r"grouping 'naive_mtl', variant 'plain': no group results for tasks"
    ):
        per_task_table(groupings, results[results["task"] != "d"])


def test_pairwise_affinity_is_the_change_from_training_alone():
    names = ["a", "b", "c"]
    table = design_table(singletons_and_pairs(3), names).assign(split="val")
    sizes = table.groupby("subset_id")["task"].transform("size")
    partner = table.groupby("subset_id")["task"].transform(lambda t: t.iloc[::-1].to_numpy())
    index = {name: i for i, name in enumerate(names)}
    # alone: 1, 2, 3; with a partner p: + 0.1 * (index of p + 1)
    table["loss"] = [
        index[task] + 1 + (0.1 * (index[other] + 1) if size == 2 else 0.0)
        for task, other, size in zip(table["task"], partner, sizes)
    ]
    raw, normalized = pairwise_matrices(table, names)
    np.testing.assert_allclose(raw, [[0, 0.2, 0.3], [0.1, 0, 0.3], [0.1, 0.2, 0]])
    np.testing.assert_allclose(normalized, normalized.T)
    assert np.all(np.diag(normalized) == 0)
    with pytest.raises(ValueError, match="no value for b trained with c"):
        pairwise_matrices(table[~((table["subset_id"] == 3 + 2) & (table["task"] == "b"))],
                          names)
