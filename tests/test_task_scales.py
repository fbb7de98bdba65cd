import numpy as np
import pandas as pd
import pytest
import torch

from taskgroup.estimate.linearized import ProjectedSplit, base_losses, estimate_values
from taskgroup.estimate.settings import GradientEstimateSettings
from taskgroup.estimate.task_scales import SMALLEST_SHARE, fit_task_scales, scale_changes

TASKS = ["a", "b", "c", "d"]


def values(changes: dict[str, np.ndarray], base: pd.Series) -> pd.DataFrame:
    """A subset_values-like table: subset i holds every task of ``changes`` with loss
    base + changes[task][i]."""
    rows = [
        {"subset_id": i, "task": task, "loss": base[task] + change[i]}
        for task, change in changes.items() for i in range(len(change))
    ]
    return pd.DataFrame(rows)


def test_exact_lines_are_recovered_and_kept_whole():
    """Real changes that are each task's own offset plus its estimated ones times its own
    factor, with no noise: every own slope is exact (no sampling variance), so every task
    keeps all of it, and its offset; a task in no subset gets the pooled within-task slope
    and no offset, a task in 2 subsets the pooled slope through its mean."""
    rng = np.random.default_rng(0)
    base = pd.Series([0.5, 0.6, 0.7, 0.8], index=TASKS)
    factors = {"a": 0.5, "b": 1.0, "c": 2.0}
    offsets = {"a": -0.01, "b": 0.0, "c": 0.02}
    estimated = {task: rng.normal(size=20) * 0.01 for task in factors}
    real = {task: offsets[task] + factors[task] * change for task, change in estimated.items()}
    table = fit_task_scales(values(estimated, base), values(real, base), base, TASKS)
    assert table["task"].tolist() == TASKS
    scales = table.set_index("task")
    for task, factor in factors.items():
        assert scales.loc[task, "own_scale"] == pytest.approx(factor, rel=1e-9)
        assert scales.loc[task, "scale"] == pytest.approx(factor, rel=1e-9)
        assert scales.loc[task, "offset"] == pytest.approx(offsets[task], abs=1e-12)
        assert scales.loc[task, "n_subsets"] == 20
    centered = {task: change - change.mean() for task, change in estimated.items()}
    pooled = sum(factors[t] * c @ c for t, c in centered.items()) / sum(
        c @ c for c in centered.values())
    assert scales.loc["d", "scale"] == pytest.approx(pooled, rel=1e-12)
    assert scales.loc["d", "offset"] == 0
    assert np.isnan(scales.loc["d", "own_scale"]) and scales.loc["d", "weight"] == 0
    np.testing.assert_allclose(table["pooled_scale"], pooled, rtol=1e-12)
    # with only 2 subsets, d has no residual variance left: the pooled slope, through d's
    # mean
    estimated["d"] = np.array([0.01, 0.03])
    real["d"] = np.array([0.05, 0.01])
    table = fit_task_scales(values(estimated, base), values(real, base), base, TASKS)
    row = table.set_index("task").loc["d"]
    assert np.isnan(row["own_scale"]) and row["weight"] == 0
    assert row["scale"] == pytest.approx(row["pooled_scale"], rel=1e-12)
    assert row["offset"] == pytest.approx(0.03 - row["scale"] * 0.02, rel=1e-12)


def test_noisy_slopes_of_equal_tasks_are_pooled_and_unequal_ones_kept():
    """Tasks with one true factor and noisy real changes: their own slopes differ by
    noise only, so the pooled slope takes their place (weight near 0); with true factors
    far apart, the tasks keep most of their own."""
    rng = np.random.default_rng(1)
    base = pd.Series(0.5, index=TASKS)
    for factors, low, high in (([1.0] * 4, 0.0, 0.3), ([0.3, 0.8, 1.5, 3.0], 0.8, 1.0)):
        estimated = {task: rng.normal(size=30) * 0.01 for task in TASKS}
        real = {task: f * estimated[task] + rng.normal(size=30) * 0.003
                for task, f in zip(TASKS, factors)}
        table = fit_task_scales(values(estimated, base), values(real, base), base, TASKS)
        assert low <= table["weight"].mean() <= high
        if high < 1:
            assert np.allclose(table["scale"], table["pooled_scale"], atol=0.1)


def test_a_task_pointing_against_real_fine_tuning_is_floored_and_errors_are_clear():
    base = pd.Series(0.5, index=TASKS)
    rng = np.random.default_rng(2)
    estimated = {task: rng.normal(size=25) * 0.01 for task in TASKS}
    real = {task: (-3.0 if task == "d" else 1.0) * estimated[task] for task in TASKS}
    table = fit_task_scales(values(estimated, base), values(real, base), base, TASKS)
    scales = table.set_index("task")
    assert scales.loc["d", "own_scale"] == pytest.approx(-3.0)
    assert scales.loc["d", "scale"] == pytest.approx(SMALLEST_SHARE * scales.loc["d",
                                                                                 "pooled_scale"])
    against = {task: -change for task, change in estimated.items()}
    with pytest.raises(ValueError, match="pooled within-task slope .* expected a positive"):
        fit_task_scales(values(estimated, base), values(against, base), base, TASKS)
    with pytest.raises(ValueError, match="share no subset"):
        moved = values(estimated, base)
        fit_task_scales(moved.assign(subset_id=moved["subset_id"] + 1000),
                        values(real, base), base, TASKS)
    with pytest.raises(ValueError, match=r"no scale for the tasks \['d'\]"):
        scale_changes(values(estimated, base), table[table["task"] != "d"], base)


def test_the_estimate_scales_each_change_from_the_linearized_base_loss():
    """estimate_values with task scales: every loss is base + offset + scale (unscaled
    loss - base), base the linearized loss at w = 0; the metric is untouched."""
    generator = torch.Generator().manual_seed(3)

    def split(n):
        task_index = torch.arange(3).repeat_interleave(n)
        return ProjectedSplit(torch.randn(3 * n, 4, generator=generator),
                              torch.randn(3 * n, generator=generator),
                              (torch.rand(3 * n, generator=generator) < 0.5).float(),
                              task_index)

    train, val = split(30), split(20)
    names = ["x", "y", "z"]
    subsets = pd.DataFrame({"subset_id": [0, 0, 1, 1, 1], "task": ["x", "y", "x", "y", "z"]})
    settings = GradientEstimateSettings(0.1, 1, None, flow_steps=3)
    plain = estimate_values(train, val, subsets, names, settings)
    scales = pd.DataFrame({"scale": [0.5, 2.0, 1.5], "offset": [0.01, 0.0, -0.02]},
                          index=names)
    scaled = estimate_values(train, val, subsets, names, settings,
                             task_scales=scales.rename_axis("task").reset_index())
    base = base_losses(val, names)
    tasks = plain["task"]
    expected = (base[tasks].to_numpy() + scales["offset"][tasks].to_numpy()
                + scales["scale"][tasks].to_numpy() * (plain["loss"].to_numpy()
                                                       - base[tasks].to_numpy()))
    np.testing.assert_allclose(scaled["loss"].to_numpy(), expected, rtol=1e-12)
    np.testing.assert_array_equal(scaled["metric"].to_numpy(), plain["metric"].to_numpy())
    # the base loss is the mean binary cross-entropy of the base outputs
    rows = val.task_index == 1
    direct = torch.nn.functional.binary_cross_entropy_with_logits(
        val.base[rows].double(), val.labels[rows].double())
    assert base["y"] == pytest.approx(float(direct), rel=1e-12)


def test_task_scales_setting_is_checked():
    with pytest.raises(ValueError, match=r"task_scales = 'some'; expected one of \['auto', "
                                         r"'none'\]"):
        GradientEstimateSettings(0.1, 1, None, task_scales="some")
    settings = GradientEstimateSettings.from_mapping(
        {"l2": 0.1, "newton_steps": 1, "max_relative_shift": None, "flow_steps": 1,
         "task_scales": "auto", "curvature_tolerance": 0.0, "step_scale": "fixed"})
    assert settings.scales_tasks
