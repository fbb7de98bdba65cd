import copy
import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from taskgroup.estimate.validity import first_order_validity
from taskgroup.group import clustering
from taskgroup.group.clustering import ClusteringSettings
from taskgroup.models.network import MultiHeadNet
from taskgroup.models.training import TrainSettings, fit
from taskgroup.report.validation import (
    agreement,
    per_task_relative_error,
    reference_clusters,
    within_task_spearman,
)


def values(losses):
    rows = [(s, t, loss) for (s, t), loss in losses.items()]
    table = pd.DataFrame(rows, columns=["subset_id", "task", "loss"])
    table["split"], table["metric"], table["estimator"] = "val", 0.5, "x"
    return table


def test_relative_error_and_spearman_by_hand():
    reference = values({(0, "a"): 1.0, (1, "a"): 2.0, (2, "a"): 4.0, (0, "b"): 2.0})
    estimate = values({(0, "a"): 1.1, (1, "a"): 1.9, (2, "a"): 5.0, (0, "b"): 2.0})
    errors = per_task_relative_error(estimate, reference).set_index(["subset_id", "task"])
    assert errors.loc[(0, "a"), "relative_error"] == pytest.approx(0.1)
    assert errors.loc[(2, "a"), "relative_error"] == pytest.approx(0.25)
    spearman = within_task_spearman(estimate, reference, pd.Series({"a": 0.0, "b": 0.0}))
    assert spearman["a"] == pytest.approx(1.0) and np.isnan(spearman["b"])


def test_first_order_expansion_is_exact_at_zero_and_close_for_small_shifts(small_data):
    torch.manual_seed(0)
    meta = MultiHeadNet(small_data.n_features, small_data.n_tasks, [3])
    tasks = torch.tensor([0, 1])
    tuned = copy.deepcopy(meta)
    fit(tuned, small_data, tasks, TrainSettings(epochs=2, lr=0.01, batch_size=16), seed=0)
    curve = first_order_validity(meta, tuned, small_data, tasks, [0.0, 0.1, 1.0], 7)
    assert set(curve["task"]) == {"task_0", "task_1"} and (curve["subset_id"] == 7).all()
    by_scale = curve.groupby("scale")["relative_error"].max()
    assert by_scale[0.0] == pytest.approx(0.0, abs=1e-6)
    assert by_scale[0.1] < 1e-3 and by_scale[0.1] < by_scale[1.0]
    shifts = curve.groupby("scale")["relative_shift"].first()
    assert shifts[1.0] == pytest.approx(10 * shifts[0.1])


def two_group_values(noise):
    """Six tasks in groups {a, b, c} and {d, e, f}, every subset of three: a partner from the
    own group lowers the loss by 0.1, one from the other group raises it by 0.1."""
    names = list("abcdef")
    rows = []
    for subset_id, members in enumerate(itertools.combinations(range(6), 3)):
        for i in members:
            same = sum(1 for j in members if j != i and j // 3 == i // 3)
            other = len(members) - 1 - same
            wobble = noise * ((subset_id * 5 + i) % 3 - 1)
            rows.append((subset_id, names[i], 1.0 - 0.1 * same + 0.1 * other + wobble))
    table = pd.DataFrame(rows, columns=["subset_id", "task", "loss"])
    table["split"], table["metric"], table["estimator"] = "val", 0.5, "x"
    return table, names


def test_agreement_clusters_both_at_the_count_chosen_on_the_reference(monkeypatch):
    reference, names = two_group_values(noise=0.0)
    estimate, _ = two_group_values(noise=0.01)
    base_loss = pd.Series(1.0, index=names)
    solved = []
    solve = clustering.solve_sdp
    monkeypatch.setattr(clustering, "solve_sdp",
                        lambda matrix, n: solved.append(n) or solve(matrix, n))
    auto = ClusteringSettings(similarity="profile", rounding="kmeans", n_clusters="auto",
                              max_clusters=4, seed=0)
    figures = agreement(estimate, reference, base_loss, names, auto, "sdp")
    # the reference's scan (2, 3, 4) picks 2 and keeps its labels; the estimate is solved at 2
    assert solved == [2, 3, 4, 2]
    assert figures["ari_clusters"] == 1.0
    assert figures["median_rel_error"] > 0
    fixed = agreement(estimate, reference, base_loss, names, replace(auto, n_clusters=2), "sdp")
    assert fixed == figures
    assert solved == [2, 3, 4, 2, 2, 2]
    # the reference clustered once for several estimates: one more solve each, same figures
    once = reference_clusters(reference, names, replace(auto, n_clusters=2), "sdp")
    assert solved == [2, 3, 4, 2, 2, 2, 2]
    for _ in range(2):
        shared = agreement(estimate, reference, base_loss, names,
                           replace(auto, n_clusters=2), "sdp", once)
        assert shared == figures
    assert solved == [2, 3, 4, 2, 2, 2, 2, 2, 2]
