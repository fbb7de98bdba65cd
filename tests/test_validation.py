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
    l2_curve,
    lr_curve,
    per_task_relative_error,
    reference_clusters,
    within_task_pearson,
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


def test_pearson_by_hand_and_undefined_below_three_subsets_or_for_constant_values():
    reference = values({(0, "a"): 1.0, (1, "a"): 2.0, (2, "a"): 4.0, (0, "b"): 2.0,
                        (0, "c"): 1.0, (1, "c"): 2.0, (2, "c"): 3.0})
    estimate = values({(0, "a"): 3.0, (1, "a"): 5.0, (2, "a"): 9.0, (0, "b"): 2.0,
                       (0, "c"): 1.0, (1, "c"): 1.0, (2, "c"): 1.0})
    pearson = within_task_pearson(estimate, reference)
    # an affine map of the reference (2 f + 1): the z-scored values agree exactly
    assert pearson["a"] == pytest.approx(1.0)
    assert np.isnan(pearson["b"]) and np.isnan(pearson["c"])


def curve_inputs():
    """A reference on 8 subsets of tasks a and b, and estimates at three l2 values: 0.1
    is the reference scaled and shifted (Pearson 1, large relative error), 0.01 is close
    in level but reorders the subsets, 1.0 is constant."""
    rng = np.random.default_rng(0)
    truth = {(s, t): 1.0 + rng.uniform() for s in range(8) for t in "ab"}
    shuffled = dict(zip(truth, rng.permutation(list(truth.values()))))
    return values(truth), {
        0.01: values({key: 1.0 + 0.5 * (value - 1.0) for key, value in shuffled.items()}),
        0.1: values({key: 3 * value for key, value in truth.items()}),
        1.0: values({key: 1.5 for key in truth}),
    }


def test_l2_curve_chooses_the_best_within_task_correlation_not_the_smallest_error():
    reference, estimates = curve_inputs()
    base = pd.Series({"a": 1.5, "b": 1.5})
    curve = l2_curve(estimates, reference, base).set_index("l2")
    assert curve.index.tolist() == [0.01, 0.1, 1.0]
    assert (curve["n_subsets"] == 8).all()
    assert curve.loc[0.1, "within_task_pearson"] == pytest.approx(1.0)
    assert curve.loc[0.1, "median_rel_error"] == pytest.approx(2.0)
    assert curve.loc[0.01, "median_rel_error"] < curve.loc[0.1, "median_rel_error"]
    assert np.isnan(curve.loc[1.0, "within_task_pearson"])
    assert curve["chosen"].tolist() == [False, True, False]
    # a fixed l2 is marked whatever the curve says
    fixed = l2_curve(estimates, reference, base, chosen=1.0)
    assert fixed["chosen"].tolist() == [False, False, True]


def test_l2_curve_breaks_a_tie_in_correlation_by_the_relative_error():
    """Two estimates with the same within-task correlations (one is three times the other):
    the affinity cannot tell them apart, so the one closer in level is chosen."""
    rng = np.random.default_rng(1)
    truth = {(s, t): 1.0 + rng.uniform() for s in range(8) for t in "abc"}
    near = {key: value + rng.normal(0, 0.1) for key, value in truth.items()}
    estimates = {0.02: values({key: 3 * value for key, value in near.items()}),
                 0.2: values(near)}
    curve = l2_curve(estimates, values(truth), pd.Series(dict.fromkeys("abc", 1.5)))
    curve = curve.set_index("l2")
    assert curve.loc[0.02, "within_task_pearson"] == pytest.approx(
        curve.loc[0.2, "within_task_pearson"]
    )
    assert curve.loc[0.2, "within_task_pearson_se"] > 0
    assert curve.loc[0.2, "median_rel_error"] < curve.loc[0.02, "median_rel_error"]
    assert curve["chosen"].tolist() == [False, True]


def test_l2_curve_refuses_what_it_cannot_choose():
    reference, estimates = curve_inputs()
    base = pd.Series({"a": 1.5, "b": 1.5})
    with pytest.raises(ValueError, match="no candidate"):
        l2_curve({}, reference, base)
    with pytest.raises(ValueError, match="0.3 is not a candidate"):
        l2_curve(estimates, reference, base, chosen=0.3)
    two_subsets = {l2: table[table["subset_id"] < 2] for l2, table in estimates.items()}
    with pytest.raises(ValueError, match="raise validation.n_subsets"):
        l2_curve(two_subsets, reference[reference["subset_id"] < 2], base)


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


def test_estimate_settings_accept_auto_and_take_the_chosen_l2_from_the_curve(tmp_path):
    from taskgroup.data.tables import write_table
    from taskgroup.estimate.settings import GradientEstimateSettings
    from taskgroup.stages.estimate import with_chosen_l2

    auto = GradientEstimateSettings.from_mapping(
        {"l2": "auto", "newton_steps": 1, "max_relative_shift": None, "flow_steps": 1,
         "task_scales": "none", "curvature_tolerance": 0.1, "step_scale": "auto",
         "l2_candidates": [0.01, 0.1]}
    )
    assert auto.l2_is_auto
    assert auto.for_projection(exact=True).step_scale == "subset"
    assert auto.for_projection(exact=False).step_scale == "fixed"
    subset = replace(auto, step_scale="subset")
    assert subset.for_projection(exact=False) is subset
    for bad in ({"l2": 0}, {"l2": "0.1"}, {"newton_steps": 0}, {"max_relative_shift": -1.0},
                {"flow_steps": 0}, {"flow_steps": 2, "newton_steps": 2},
                {"task_scales": "yes"}, {"curvature_tolerance": -0.1},
                {"step_scale": "adam"}, {"newton_steps": 2, "flow_steps": 1}):
        with pytest.raises(ValueError, match="gradient_estimate"):
            replace(auto, **bad)
    fixed = replace(auto, l2=0.2)
    assert with_chosen_l2(fixed) is fixed
    with pytest.raises(ValueError, match="no l2 curve table"):
        with_chosen_l2(auto)
    reference, estimates = curve_inputs()
    curve = l2_curve(estimates, reference, pd.Series({"a": 1.5, "b": 1.5}))
    write_table(curve, tmp_path / "l2_curve.parquet")
    assert with_chosen_l2(auto, tmp_path / "l2_curve.parquet") == replace(auto, l2=0.1)
    write_table(curve.assign(chosen=True), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="bad.parquet: 3 rows have chosen == True"):
        with_chosen_l2(auto, tmp_path / "bad.parquet")


def test_the_gradient_estimator_refuses_an_unchosen_l2():
    from taskgroup.estimate.settings import GradientEstimateSettings
    from taskgroup.estimate.valuers import gradient_valuer

    with pytest.raises(ValueError, match="no l2 was chosen"):
        gradient_valuer({}, None, 1.0, ["a"], ["binary"],
                        GradientEstimateSettings("auto", 1, None), "auto")


def two_seeds(rng, noise: float, shift: float, subsets: int = 10, tasks: str = "abc"):
    """Two fine-tunings' values of ``subsets`` subsets: a shared per-subset signal plus
    independent noise of sd ``noise`` each, ``shift`` above a meta-initialization loss of 1."""
    signal = {(s, t): rng.normal() for s in range(subsets) for t in tasks}
    first = {key: 1.0 + shift * (1 + value + rng.normal(0, noise)) for key, value in signal.items()}
    second = {key: 1.0 + shift * (1 + value + rng.normal(0, noise))
              for key, value in signal.items()}
    return values(first), values(second)


def test_lr_curve_chooses_the_largest_rate_within_a_standard_error_of_the_best_floor():
    """0.01 moves the values most but its seeds disagree; 0.001 and 0.0003 agree about
    equally well (the larger wins); a fixed rate is marked whatever the curve says."""
    rng = np.random.default_rng(0)
    pairs = {0.01: two_seeds(rng, 3.0, 0.2), 0.001: two_seeds(rng, 0.05, 0.02),
             0.0003: two_seeds(rng, 0.05, 0.005)}
    base = pd.Series(dict.fromkeys("abc", 1.0))
    curve = lr_curve(pairs, base).set_index("lr")
    assert curve.index.tolist() == [0.0003, 0.001, 0.01]
    assert (curve["n_subsets"] == 10).all()
    assert curve.loc[0.001, "noise_floor"] > 0.9 and curve.loc[0.0003, "noise_floor"] > 0.9
    assert curve.loc[0.01, "noise_floor"] < curve.loc[0.001, "noise_floor"] - curve.loc[
        0.001, "noise_floor_se"]
    assert curve.loc[0.01, "median_rel_change"] > curve.loc[0.001, "median_rel_change"] > (
        curve.loc[0.0003, "median_rel_change"])
    assert curve["share_raised"].between(0, 1).all()
    assert curve["chosen"].tolist() == [False, True, False]
    assert lr_curve(pairs, base, chosen=0.01)["chosen"].tolist() == [False, False, True]
    # equal agreement everywhere: the largest rate
    same = {lr: pairs[0.001] for lr in (0.001, 0.003)}
    assert lr_curve(same, base)["chosen"].tolist() == [False, True]


def test_lr_curve_refuses_what_it_cannot_choose():
    rng = np.random.default_rng(0)
    base = pd.Series(dict.fromkeys("abc", 1.0))
    with pytest.raises(ValueError, match="no candidate"):
        lr_curve({}, base)
    with pytest.raises(ValueError, match="0.5 is not a candidate"):
        lr_curve({0.01: two_seeds(rng, 0.1, 0.1)}, base, chosen=0.5)
    with pytest.raises(ValueError, match="set finetune.lr to a number"):
        lr_curve({0.01: two_seeds(rng, 0.1, 0.1, subsets=2)}, base)


def test_finetune_settings_accept_auto_and_take_the_chosen_rate_from_the_curve(tmp_path):
    from taskgroup.data.tables import write_table
    from taskgroup.estimate.finetune import FinetuneSettings
    from taskgroup.stages.finetune import with_chosen_lr

    section = {"epochs": 2, "lr": "auto", "batch_size": 16, "weight_decay": 0.0, "seed": 3,
               "lr_candidates": [0.01, 0.001]}
    auto = FinetuneSettings.from_mapping(section)
    assert auto.lr_is_auto and auto.lr_candidates == (0.01, 0.001)
    assert auto.with_lr(0.001).training == TrainSettings(2, 0.001, 16, 0.0)
    for bad in ("fast", 0.0, -1.0):
        with pytest.raises(ValueError, match="finetune.lr = "):
            FinetuneSettings.from_mapping({**section, "lr": bad})
    with pytest.raises(ValueError, match="lr_candidates"):
        FinetuneSettings.from_mapping({**section, "lr_candidates": [0.01, 0.0]})
    with pytest.raises(ValueError, match='finetune.lr is "auto": replace it'):
        auto.require_lr()
    fixed = auto.with_lr(0.01)
    assert with_chosen_lr(fixed) is fixed
    with pytest.raises(ValueError, match="no lr curve table"):
        with_chosen_lr(auto)
    rng = np.random.default_rng(0)
    curve = lr_curve({0.01: two_seeds(rng, 3.0, 0.2), 0.001: two_seeds(rng, 0.05, 0.02)},
                     pd.Series(dict.fromkeys("abc", 1.0)))
    write_table(curve, tmp_path / "lr_curve.parquet")
    assert with_chosen_lr(auto, tmp_path / "lr_curve.parquet") == auto.with_lr(0.001)
    write_table(curve.assign(chosen=False), tmp_path / "none.parquet")
    with pytest.raises(ValueError, match="none.parquet: 0 rows have chosen == True"):
        with_chosen_lr(auto, tmp_path / "none.parquet")


def test_lr_curve_on_fine_tunes_every_candidate_twice_and_refuses_no_candidates(small_data):
    """Real fine-tunings of a small model: each rate's values are its fine-tunings' (the
    chosen rate's first seed equals a plain fine-tuning at that rate), and the floor of
    a rate is the agreement of its two seeds."""
    from taskgroup.estimate.finetune import FinetuneSettings, finetune_values
    from taskgroup.stages.validate import lr_curve_on, other_seed

    torch.manual_seed(0)
    meta = MultiHeadNet(small_data.n_features, small_data.n_tasks, [4])
    fit(meta, small_data, torch.arange(small_data.n_tasks), TrainSettings(5, 0.01, 16), seed=0)
    names = small_data.task_names
    subsets = pd.DataFrame(
        [(s, t) for s, pair in enumerate(itertools.combinations(names, 2)) for t in pair],
        columns=["subset_id", "task"],
    )
    auto = FinetuneSettings(TrainSettings(2, "auto", 16), 0, (0.01, 0.001))
    curve = lr_curve_on(meta, small_data, subsets, auto).set_index("lr")
    assert curve.index.tolist() == [0.001, 0.01]
    assert (curve["n_subsets"] == subsets["subset_id"].nunique()).all()
    assert curve["chosen"].sum() == 1 and curve["noise_floor"].notna().all()
    assert curve.loc[0.01, "median_rel_change"] > curve.loc[0.001, "median_rel_change"]
    # the floor of 0.01 is the agreement of the two seeds' fine-tunings at 0.01
    from taskgroup.models.training import evaluate

    base = evaluate(meta, small_data, torch.arange(small_data.n_tasks), ("val",))
    base = base.set_index("task")["loss"]
    first = finetune_values(meta, small_data, subsets, auto.with_lr(0.01))
    second = finetune_values(meta, small_data, subsets, other_seed(auto.with_lr(0.01)))
    floor = np.nanmedian(within_task_spearman(first, second, base))
    assert curve.loc[0.01, "noise_floor"] == pytest.approx(floor, abs=1e-12)
    fixed = lr_curve_on(meta, small_data, subsets, replace(auto, lr_candidates=()).with_lr(0.003))
    assert fixed["lr"].tolist() == [0.003] and fixed["chosen"].tolist() == [True]
    with pytest.raises(ValueError, match="no learning rate to calibrate"):
        lr_curve_on(meta, small_data, subsets, replace(auto, lr_candidates=()))
    with pytest.raises(ValueError, match='finetune.lr is "auto"'):
        finetune_values(meta, small_data, subsets, auto)
