import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from taskgroup.estimate import linearized
from taskgroup.estimate.linearized import (
    ProjectedSplit,
    TrainingGram,
    cap_shifts,
    compress_curvature,
    compressed_flow,
    estimate_values,
    example_space_rows,
    fit_shifts,
    linearized_values,
    member_lists,
    per_task_statistics,
    subset_columns,
    subset_step_scales,
    subsets_per_batch,
    task_squared_gradients,
)
from taskgroup.estimate.settings import GradientEstimateSettings


def synthetic_split(n_per_task, n_tasks, dim, shift, seed):
    generator = torch.Generator().manual_seed(seed)
    n = n_per_task * n_tasks
    z = torch.randn(n, dim, generator=generator)
    base = torch.randn(n, generator=generator) * 0.5
    probability = torch.sigmoid(base + z @ shift)
    labels = (torch.rand(n, generator=generator) < probability).float()
    task_index = torch.arange(n_tasks).repeat_interleave(n_per_task)
    return ProjectedSplit(z, base, labels, task_index)


def test_offset_regression_recovers_the_true_shift_of_a_linear_model():
    shift = torch.tensor([0.8, -0.5, 0.3, 0.0])
    train = synthetic_split(n_per_task=20000, n_tasks=2, dim=4, shift=shift, seed=0)
    members = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    fitted = fit_shifts(train, members, l2=1e-6, newton_steps=6)[0].float()
    torch.testing.assert_close(fitted, shift, atol=0.03, rtol=0)
    one_step = fit_shifts(train, members, l2=1e-6, newton_steps=1)[0].float()
    assert (one_step - shift).norm() < 0.25 * shift.norm()  # one Newton step gets close


def test_first_newton_step_uses_only_the_subsets_own_tasks():
    shift = torch.tensor([1.0, -1.0])
    train = synthetic_split(n_per_task=500, n_tasks=3, dim=2, shift=shift, seed=1)
    members = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    together = fit_shifts(train, members, l2=0.1)
    for row in range(2):
        keep = members[row, train.task_index] > 0
        alone = ProjectedSplit(train.z[keep], train.base[keep], train.labels[keep],
                               torch.zeros(int(keep.sum()), dtype=torch.int64))
        single = fit_shifts(alone, torch.ones(1, 1, dtype=torch.float64), l2=0.1)
        torch.testing.assert_close(together[row], single[0])


def test_linearized_values_match_a_direct_computation():
    val = synthetic_split(n_per_task=50, n_tasks=3, dim=3, shift=torch.zeros(3), seed=2)
    weights = torch.randn(2, 3, dtype=torch.float64)
    members = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    loss, accuracy = linearized_values(val, weights, members)
    rows = val.task_index == 1
    logits = val.base[rows].double() + val.z[rows].double() @ weights[1]
    expected = F.binary_cross_entropy_with_logits(logits, val.labels[rows].double())
    assert loss[1, 1].item() == pytest.approx(expected.item())
    expected_accuracy = ((logits > 0).double() == val.labels[rows].double()).double().mean()
    assert accuracy[1, 1].item() == pytest.approx(expected_accuracy.item())


def test_cap_scales_down_only_large_shifts():
    weights = torch.ones(3, 2, dtype=torch.float64)
    norms = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    capped, capped_norms = cap_shifts(weights, norms, theta_norm=10.0, cap=0.2)
    torch.testing.assert_close(capped_norms, torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(capped[2], torch.full((2,), 0.5, dtype=torch.float64))
    same, _ = cap_shifts(weights, norms, theta_norm=10.0, cap=None)
    assert torch.equal(same, weights)


def test_estimates_do_not_depend_on_chunking():
    shift = torch.tensor([0.5, -0.2, 0.1])
    train = synthetic_split(200, 4, 3, shift, seed=3)
    val = synthetic_split(100, 4, 3, shift, seed=4)
    names = ["a", "b", "c", "d"]
    subsets = pd.DataFrame({"subset_id": [0, 0, 1, 1, 2, 2],
                            "task": ["a", "b", "b", "c", "a", "d"]})
    settings = GradientEstimateSettings(l2=0.05, newton_steps=1, max_relative_shift=None)
    whole = estimate_values(train, val, subsets, names, settings)
    parts = pd.concat([estimate_values(train, val, part, names, settings)
                       for _, part in subsets.groupby(subsets["subset_id"] == 2)])
    parts = parts.sort_values(["subset_id", "task"], ignore_index=True)
    whole = whole.sort_values(["subset_id", "task"], ignore_index=True)
    pd.testing.assert_frame_equal(whole, parts)
    assert (whole["estimator"] == "gradient").all() and len(whole) == 6
    assert np.isfinite(whole["loss"]).all()


def hand_derivatives(train):
    """l'(b) and l''(b) (n,) float64 of every example, written out by task type: logistic
    (sigmoid(b) - y, sigmoid(b) (1 - sigmoid(b))) or squared error (2 (b - y), 2)."""
    probability = torch.sigmoid(train.base.double())
    regression = train.regression_mask()
    first = torch.where(regression, 2 * (train.base.double() - train.labels.double()),
                        probability - train.labels.double())
    second = torch.where(regression, torch.full_like(probability, 2.0),
                         probability * (1 - probability))
    return first, second


def dense_first_step(train, members, l2):
    """The straightforward first Newton step: each subset's (d, d) system over every column,
    from its own examples, -(sum c z z^T / n_S + l2 I)^{-1} sum l'(b) z / n_S."""
    z = train.z.double()
    first, second = hand_derivatives(train)
    weights = []
    for row in members:
        inside = row[train.task_index] > 0
        n = int(inside.sum())
        hessian = z[inside].T @ (second[inside, None] * z[inside]) / n
        gradient = z[inside].T @ first[inside] / n
        identity = torch.eye(z.shape[1], dtype=torch.float64)
        weights.append(-torch.linalg.solve(hessian + l2 * identity, gradient))
    return torch.stack(weights)


def test_subset_sums_from_the_membership_equal_the_dense_sum_over_every_task():
    """Each subset adds its own members' statistics: the same fit as the explicit solve of
    (sum_t m_st H_t / n_S + l2 I) w = -sum_t m_st g_t / n_S over every column."""
    train = synthetic_split(60, 5, 4, torch.tensor([0.3, -0.1, 0.2, 0.0]), seed=5)
    train.task_index[train.task_index == 4] = 3  # a task without examples
    members = torch.tensor(
        [[1, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1]],
        dtype=torch.float64,
    )
    statistics = per_task_statistics(train, 5)
    assert statistics.counts.tolist() == [60, 60, 60, 120, 0]
    fitted = fit_shifts(train, members, l2=0.2, statistics=statistics)
    torch.testing.assert_close(fitted, dense_first_step(train, members, 0.2))
    with pytest.raises(ValueError, match="no training examples"):
        fit_shifts(train, torch.tensor([[0, 0, 0, 0, 1.0]], dtype=torch.float64), l2=0.2)


def headed_split(n_per_task, n_tasks, shared, head, seed, regression_tasks=()):
    """Projected gradients laid out as the projection lays them out: ``shared`` trunk
    columns used by every task (one of them by none, one by task 0 only: a dead unit and a
    unit only task 0 activates), then ``head`` columns per task, nonzero on that task's
    examples only. Binary tasks except ``regression_tasks``."""
    generator = torch.Generator().manual_seed(seed)
    n = n_per_task * n_tasks
    task_index = torch.arange(n_tasks).repeat_interleave(n_per_task)
    trunk = torch.randn(n, shared, generator=generator, dtype=torch.float64)
    trunk[:, 0] = 0.0
    trunk[task_index != 0, 1] = 0.0
    heads = torch.zeros(n, n_tasks, head, dtype=torch.float64)
    heads[torch.arange(n), task_index] = torch.randn(n, head, generator=generator,
                                                     dtype=torch.float64)
    z = torch.cat([trunk, heads.flatten(1)], dim=1)
    base = torch.randn(n, generator=generator, dtype=torch.float64)
    regression = torch.isin(task_index, torch.tensor(list(regression_tasks), dtype=torch.int64))
    labels = torch.where(
        regression, base + torch.randn(n, generator=generator, dtype=torch.float64),
        (torch.rand(n, generator=generator, dtype=torch.float64) < 0.5).double(),
    )
    return ProjectedSplit(z, base, labels, task_index, regression)


def test_column_layout_finds_the_shared_and_the_private_columns():
    train = headed_split(20, 4, shared=5, head=2, seed=8)
    # task 3's examples become task 2's: task 3 has none, task 2 uses both heads' columns
    train.task_index[train.task_index == 3] = 2
    statistics = per_task_statistics(train, 4)
    assert statistics.shared.tolist() == [2, 3, 4]
    assert statistics.private.tolist() == [
        [1, 5, 6, 13], [7, 8, 13, 13], [9, 10, 11, 12], [13] * 4, [13] * 4,
    ]
    assert statistics.dim == 13 and statistics.reduced_dim(2) == 3 + 2 * 4
    assert statistics.shared_hessians.shape == (5, 3, 3)
    assert statistics.coupling.shape == (5, 3, 4) and statistics.private_hessians.shape == (5, 4, 4)
    assert not statistics.private_hessians[3:].any() and not statistics.coupling[3:].any()


@pytest.mark.parametrize("n_per_task", [3, 40])
def test_reduced_systems_equal_the_dense_solve_with_fewer_and_more_rows_than_columns(
    n_per_task,
):
    """A subset's system on its own columns gives the (d, d) solve's shift, whether its
    examples are fewer (3 per task: 6 to 9 rows) or more (80 to 120) than its d = 21
    columns; subsets of different sizes in one batch; regression and binary tasks."""
    train = headed_split(n_per_task, 6, shared=6, head=3, seed=9, regression_tasks=(1, 4))
    members = torch.tensor(
        [[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0], [1, 0, 0, 0, 0, 1], [0, 1, 0, 1, 0, 1],
         [0, 0, 0, 0, 1, 0]],
        dtype=torch.float64,
    )
    fitted = fit_shifts(train, members, l2=0.05)
    torch.testing.assert_close(fitted, dense_first_step(train, members, 0.05),
                               rtol=1e-9, atol=1e-12)
    for row, subset in enumerate(members):  # non-members' head columns stay at 0 exactly
        outside = torch.ones(6, dtype=torch.bool)
        outside[subset > 0] = False
        heads = fitted[row, 6:].reshape(6, 3)
        assert not heads[outside].any() and fitted[row, 0] == 0.0


def test_further_newton_steps_on_the_reduced_columns_equal_the_dense_ones():
    train = headed_split(30, 4, shared=4, head=2, seed=10)
    members = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]], dtype=torch.float64)
    weights = fit_shifts(train, members, l2=0.1, newton_steps=3)
    z = train.z.double()
    for row, subset in enumerate(members):  # two more Newton steps, each on all d columns
        inside = subset[train.task_index] > 0
        w = dense_first_step(train, subset[None], 0.1)[0]
        for _ in range(2):
            output = train.base[inside] + z[inside] @ w
            probability = torch.sigmoid(output)
            n = int(inside.sum())
            gradient = z[inside].T @ (probability - train.labels[inside]) / n + 0.1 * w
            hessian = z[inside].T @ ((probability * (1 - probability))[:, None] * z[inside])
            w = w - torch.linalg.solve(hessian / n + 0.1 * torch.eye(12, dtype=torch.float64),
                                       gradient)
        torch.testing.assert_close(weights[row], w, rtol=1e-9, atol=1e-12)


def test_member_values_equal_every_tasks_values_on_the_members():
    val = headed_split(15, 5, shared=3, head=2, seed=11, regression_tasks=(2,))
    weights = torch.randn(3, 13, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(12))
    members = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 1, 1, 1], [0, 0, 0, 0, 1]],
                           dtype=torch.float64)
    metrics = ["accuracy", "accuracy", "r2", "accuracy", "accuracy"]
    loss, metric = linearized_values(val, weights, members, metrics)
    own_loss, own_metric = linearized_values(val, weights, members, metrics, only_members=True)
    held = members > 0
    # equal up to the rounding of products of different widths
    torch.testing.assert_close(own_loss[held], loss[held], rtol=1e-12, atol=0)
    torch.testing.assert_close(own_metric[held], metric[held], rtol=1e-12, atol=0)
    assert own_loss[~held].isnan().all() and own_metric[~held].isnan().all()


def test_validation_outputs_in_slices_equal_the_whole(monkeypatch):
    val = headed_split(15, 5, shared=3, head=2, seed=13, regression_tasks=(2,))
    weights = torch.randn(7, 13, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(14))
    members = (torch.rand(7, 5, generator=torch.Generator().manual_seed(15)) < 0.6).double()
    metrics = ["accuracy", "roc_auc", "r2", "accuracy", "accuracy"]
    whole = linearized_values(val, weights, members, metrics, only_members=True)
    # 16 outputs at a time: a task's 15 rows by one subset per slice
    monkeypatch.setattr("taskgroup.estimate.linearized.OUTPUT_ENTRIES", 16)
    sliced = linearized_values(val, weights, members, metrics, only_members=True)
    # equal up to the rounding of products of different widths
    for one, other in zip(whole, sliced):
        torch.testing.assert_close(one, other, rtol=1e-12, atol=0, equal_nan=True)


def test_estimates_do_not_depend_on_the_memory_of_a_batch():
    train = synthetic_split(100, 6, 5, torch.tensor([0.4, -0.3, 0.1, 0.0, 0.2]), seed=6)
    val = synthetic_split(50, 6, 5, torch.zeros(5), seed=7)
    names = list("abcdef")
    subsets = pd.DataFrame({"subset_id": np.repeat(np.arange(5), 3),
                            "task": list("abcbcdcdedefafb")})
    settings = GradientEstimateSettings(l2=0.05, newton_steps=1, max_relative_shift=None)
    assert subsets_per_batch(5, 1e-9) == 1
    assert subsets_per_batch(100, 3 * 8 * 100 * 100 * 7 / 1e6) == 7
    one_at_a_time = estimate_values(train, val, subsets, names, settings, memory_mb=1e-9)
    pd.testing.assert_frame_equal(one_at_a_time, estimate_values(train, val, subsets, names,
                                                                 settings, memory_mb=512))


def dense_system(train, subset):
    """A subset's Hessian (d, d) and gradient (d,) of the mean offset loss at w = 0, over
    every column, from its own examples."""
    z = train.z.double()
    inside = subset[train.task_index] > 0
    first, second = hand_derivatives(train)
    n = int(inside.sum())
    return (z[inside].T @ (second[inside, None] * z[inside]) / n,
            z[inside].T @ first[inside] / n)


@pytest.mark.parametrize("space", ["features", "examples"])
@pytest.mark.parametrize("steps", [2, 5])
def test_flow_steps_follow_the_implicit_euler_filter_on_every_eigenvector(steps, space):
    """p implicit Euler steps of length 1 / (p l2) move along an eigenvector (lambda, u) of
    H by -(u^T g) (1 - (a / (lambda + a))^p) / lambda, a = p l2; columns no member uses
    stay at 0. Solved on the columns or on the examples alike."""
    train = headed_split(30, 4, shared=4, head=2, seed=12, regression_tasks=(3,))
    members = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]], dtype=torch.float64)
    l2 = 0.3
    weights = fit_shifts(train, members, l2=l2, flow_steps=steps, space=space)
    for row, subset in enumerate(members):
        hessian, gradient = dense_system(train, subset)
        values, vectors = torch.linalg.eigh(hessian)
        a = steps * l2
        safe = values.clamp_min(1e-300)
        gain = torch.where(values > 1e-12, (1 - (a / (values + a)) ** steps) / safe,
                           torch.full_like(values, steps / a))  # the limit at lambda = 0
        expected = -(vectors @ (gain * (vectors.T @ gradient)))
        torch.testing.assert_close(weights[row], expected, rtol=1e-8, atol=1e-12)


def test_many_flow_steps_approach_gradient_flow_and_one_is_the_ridge():
    train = headed_split(40, 3, shared=3, head=2, seed=13)
    members = torch.tensor([[1, 1, 1]], dtype=torch.float64)
    l2 = 0.5
    hessian, gradient = dense_system(train, members[0])
    values, vectors = torch.linalg.eigh(hessian)
    # gradient flow from 0 for a time 1 / l2: -(1 - exp(-lambda / l2)) / lambda per direction
    gain = torch.where(values > 1e-12, -torch.expm1(-values / l2) / values.clamp_min(1e-300),
                       torch.full_like(values, 1 / l2))
    flow = -(vectors @ (gain * (vectors.T @ gradient)))
    ridge = dense_first_step(train, members, l2)[0]  # the (d, d) ridge solve, by hand
    one_step = fit_shifts(train, members, l2=l2, flow_steps=1)[0]
    torch.testing.assert_close(one_step, ridge, rtol=1e-9, atol=1e-12)
    errors = [float((fit_shifts(train, members, l2=l2, flow_steps=p)[0] - flow).norm())
              for p in (1, 4, 64)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02 * errors[0]  # the Euler error falls as 1 / p


def test_flow_steps_refuse_further_newton_steps():
    train = headed_split(10, 2, shared=2, head=1, seed=14)
    members = torch.ones(1, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="flow_steps = 3 and newton_steps = 2"):
        fit_shifts(train, members, l2=0.1, newton_steps=2, flow_steps=3)
    with pytest.raises(ValueError, match="gradient_estimate.flow_steps = 2 and newton_steps"):
        GradientEstimateSettings(l2=0.1, newton_steps=2, max_relative_shift=None, flow_steps=2)
    with pytest.raises(ValueError, match="gradient_estimate.flow_steps = 0; expected >= 1"):
        GradientEstimateSettings(l2=0.1, newton_steps=1, max_relative_shift=None, flow_steps=0)


@pytest.mark.parametrize("steps", [1, 4])
def test_subsets_with_fewer_examples_than_columns_are_solved_on_their_examples(steps):
    """Few examples per task and wide heads: "auto" solves the small subsets on their
    examples, with the values of the column solve (to rounding), including an example of
    zero curvature (a saturated logit) and a regression task; the Gram's memory budget
    changes no value."""
    train = headed_split(6, 5, shared=10, head=8, seed=15, regression_tasks=(2,))
    train.base[0] = 60.0  # sigmoid(60) rounds to 1: l'' = 0
    members = torch.tensor([[1, 1, 0, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1]],
                           dtype=torch.float64)
    statistics = per_task_statistics(train, 5)
    # 12, 18 and 30 examples against 8 shared + 9 private columns per member: 26, 35, 53
    assert example_space_rows(statistics, members).tolist() == [True, True, True]
    columns = fit_shifts(train, members, l2=0.2, flow_steps=steps, space="features")
    chosen = fit_shifts(train, members, l2=0.2, flow_steps=steps)
    torch.testing.assert_close(chosen, columns, rtol=1e-9, atol=1e-12)
    kept = fit_shifts(train, members, l2=0.2, flow_steps=steps,
                      gram=TrainingGram(train, 5, memory_mb=512))
    recomputed = fit_shifts(train, members, l2=0.2, flow_steps=steps,
                            gram=TrainingGram(train, 5, memory_mb=0))
    assert torch.equal(kept, recomputed)
    many = headed_split(40, 5, shared=10, head=8, seed=15)
    assert not example_space_rows(per_task_statistics(many, 5), members).any()



def test_a_task_s_own_block_read_once_is_not_kept_and_a_kept_one_is_reused():
    """own_block is Z_t Z_t^T; it leaves the full Gram untouched (compress_curvature reads
    each own block once) unless the block was kept before, and then returns that one."""
    train = headed_split(6, 5, shared=10, head=8, seed=15)
    gram = TrainingGram(train, 5, memory_mb=512)
    z = train.z[train.task_index == 2].double()
    torch.testing.assert_close(gram.own_block(2), z @ z.T, rtol=1e-12, atol=1e-12)
    assert not gram.filled.any()
    kept = gram.block(2, 2)
    assert gram.filled[2, 2] and torch.equal(gram.own_block(2), kept)

def test_fit_shifts_refuses_an_unknown_space():
    train = headed_split(10, 2, shared=2, head=1, seed=14)
    with pytest.raises(ValueError, match="space: expected auto, features or examples, found 'x'"):
        fit_shifts(train, torch.ones(1, 2, dtype=torch.float64), l2=0.1, space="x")


def uneven_split(seed):
    """A headed split (6 tasks, 24 trunk and 6 head columns each) whose tasks hold 4 to 9
    examples, one of them of zero curvature (a saturated logit), task 2 a regression task."""
    train = headed_split(9, 6, shared=24, head=6, seed=seed, regression_tasks=(2,))
    train.base[0] = 60.0  # sigmoid(60) rounds to 1: l'' = 0
    keep = torch.cat([torch.arange(9 * task, 9 * task + 4 + task) for task in range(6)])
    return ProjectedSplit(train.z[keep], train.base[keep], train.labels[keep],
                          train.task_index[keep], train.regression[keep])


def truncated_flow(train, subset, l2, steps, tolerance):
    """The flow's shift (d,) of a subset with each member's Hessian sum H_t cut by hand to
    its eigen-directions of eigenvalue above tolerance x l2 x n_t, from (d, d) matrices."""
    z = train.z.double()
    first, second = hand_derivatives(train)
    inside = subset[train.task_index] > 0
    n = int(inside.sum())
    hessian = torch.zeros(z.shape[1], z.shape[1], dtype=torch.float64)
    for task in torch.nonzero(subset).squeeze(1).tolist():
        rows = train.task_index == task
        values, vectors = torch.linalg.eigh(z[rows].T @ (second[rows, None] * z[rows]))
        keep = values > tolerance * l2 * int(rows.sum())
        hessian += vectors[:, keep] @ torch.diag(values[keep]) @ vectors[:, keep].T
    hessian /= n
    gradient = z[inside].T @ first[inside] / n
    values, vectors = torch.linalg.eigh(hessian)
    a = steps * l2
    gain = torch.where(values > 1e-12, (1 - (a / (values + a)) ** steps)
                       / values.clamp_min(1e-300), torch.full_like(values, steps / a))
    return -(vectors @ (gain * (vectors.T @ gradient)))


@pytest.mark.parametrize("steps", [1, 4])
def test_compressed_flow_keeps_the_directions_above_the_tolerance(steps):
    """compressed_flow with every task's Hessian cut to its eigen-directions above
    tolerance x l2 x n_t equals the flow on the cut Hessians solved by hand with (d, d)
    matrices; tolerance 0 keeps every direction: the exact flow of the column solve. Tasks
    of 4 to 9 examples (ranks padded), subsets of 2 to 4 members (padded), a regression
    task and an example of zero curvature. What is dropped moves a shift by at most
    tolerance x ||g_S|| / l2."""
    train = uneven_split(seed=16)
    members = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 1, 1, 1, 0, 1], [0, 0, 1, 0, 1, 1],
                            [1, 0, 0, 1, 1, 1]], dtype=torch.float64)
    sizes = members @ torch.bincount(train.task_index, minlength=6).double()
    holding = member_lists(members)
    gram = TrainingGram(train, 6)
    l2 = 0.3
    exact = fit_shifts(train, members, l2=l2, flow_steps=steps, space="features")
    every = compress_curvature(gram, l2, tolerance=0.0)
    assert every.ranks.tolist() == [3, 5, 6, 7, 8, 9, 0]  # task 0 loses its l'' = 0 example
    torch.testing.assert_close(compressed_flow(every, holding, sizes, l2, steps), exact,
                               rtol=1e-8, atol=1e-12)
    cut = compress_curvature(gram, l2, tolerance=2.0)
    assert cut.ranks.tolist() == [2, 4, 6, 4, 4, 4, 0]
    weights = compressed_flow(cut, holding, sizes, l2, steps)
    for row, subset in enumerate(members):
        torch.testing.assert_close(weights[row], truncated_flow(train, subset, l2, steps, 2.0),
                                   rtol=1e-8, atol=1e-12)
    # the shift moves by at most tolerance x ||g_S|| / l2
    for tolerance in (0.2, 1.0, 2.0):
        moved = compressed_flow(compress_curvature(gram, l2, tolerance), holding, sizes, l2,
                                steps) - exact
        for row, subset in enumerate(members):
            bound = tolerance * dense_system(train, subset)[1].norm() / l2
            assert 0 < moved[row].norm() <= bound


def low_rank_split(n_per_task, n_tasks, seed, noise=0.0):
    """A headed split (40 trunk and 6 head columns per task) whose tasks' gradients take
    two values each (repeated), plus Gaussian ``noise``: curvature of rank 2 and noise."""
    train = headed_split(n_per_task, n_tasks, shared=40, head=6, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    for task in range(n_tasks):
        rows = torch.nonzero(train.task_index == task).squeeze(1)
        train.z[rows] = train.z[rows[torch.arange(len(rows)) % 2]]
        train.z[rows] += noise * torch.randn(len(rows), train.z.shape[1], generator=generator,
                                             dtype=torch.float64) * (train.z[rows] != 0)
    return train


def with_a_full_rank_task(train, task, seed):
    """``train`` with Gaussian noise (scale 0.5) added to ``task``'s nonzero gradient
    entries: that task's curvature becomes of full rank among the low-rank others."""
    rows = torch.nonzero(train.task_index == task).squeeze(1)
    noise = torch.randn(len(rows), train.z.shape[1], dtype=torch.float64,
                        generator=torch.Generator().manual_seed(seed))
    train.z[rows] += 0.5 * noise * (train.z[rows] != 0)
    return train


def test_fit_shifts_solves_subsets_on_the_kept_directions_when_they_are_few():
    """With compressed curvature, a subset solved on its examples goes to the kept
    directions when its members keep at most half as many as it has examples (m r <=
    n_S / 2, r the most any task keeps); the others stay on their examples. Cutting only
    rounding-level eigenvalues gives the exact flow; cutting all of them leaves gradient
    flow on a flat loss; without the memory for the cache there is no compression."""
    train = low_rank_split(12, 6, seed=17)
    keep = (train.task_index != 0) | (torch.arange(len(train.task_index)) < 3)
    train = ProjectedSplit(train.z[keep], train.base[keep], train.labels[keep],
                           train.task_index[keep])  # task 0: 3 examples, rank 2
    members = torch.tensor([[1, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0], [1, 0, 0, 1, 0, 0]],
                           dtype=torch.float64)
    assert example_space_rows(per_task_statistics(train, 6), members).all()
    sizes = members @ torch.bincount(train.task_index, minlength=6).double()
    gram = TrainingGram(train, 6)
    curvature = compress_curvature(gram, 0.2, tolerance=1e-9)
    assert curvature.ranks.tolist() == [2, 2, 2, 2, 2, 2, 0]
    # 3 examples < 2 x 1 x 2 directions: on its examples; 24 and 15 >= 2 x 2 x 2: compressed
    chosen = fit_shifts(train, members, l2=0.2, flow_steps=3, gram=gram, curvature=curvature)
    on_examples = fit_shifts(train, members, l2=0.2, flow_steps=3, gram=gram)
    assert torch.equal(chosen[0], on_examples[0])
    assert torch.equal(chosen[1:], compressed_flow(curvature, member_lists(members[1:]),
                                                   sizes[1:], 0.2, 3))
    torch.testing.assert_close(chosen, fit_shifts(train, members, l2=0.2, flow_steps=3,
                                                  space="features"), rtol=1e-8, atol=1e-12)
    flat = compress_curvature(gram, 0.2, tolerance=1e9)  # every direction dropped
    assert int(flat.ranks.sum()) == 0
    chosen = fit_shifts(train, members, l2=0.2, flow_steps=3, gram=gram, curvature=flat)
    for row, subset in enumerate(members):
        gradient = dense_system(train, subset)[1]
        torch.testing.assert_close(chosen[row], -gradient / 0.2, rtol=1e-10, atol=1e-12)
    assert compress_curvature(gram, 0.2, tolerance=1e-9, memory_mb=0) is None


def test_a_task_keeping_many_directions_leaves_only_its_own_subsets_uncompressed():
    """A subset is compressed by the directions its own members keep (q <= n_S / 2), not
    by the most any task keeps: a task of full rank among rank-2 tasks keeps its own
    subsets on their examples and no other. A subset's compressed shift does not depend
    on the subsets fitted with it (systems of other sizes are factored apart)."""
    train = with_a_full_rank_task(low_rank_split(12, 6, seed=20), task=5, seed=21)
    gram = TrainingGram(train, 6)
    curvature = compress_curvature(gram, 0.2, tolerance=1e-9)
    assert curvature.ranks.tolist() == [2, 2, 2, 2, 2, 12, 0]
    members = torch.tensor([[0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 1, 0],
                            [1, 0, 0, 1, 0, 0]], dtype=torch.float64)
    holding = member_lists(members)
    assert curvature.subset_ranks(holding).tolist() == [4, 14, 10, 4]
    tasks, steps = curvature.subset_rows(holding[:2], 16)
    assert tasks.tolist() == [[1, 1, 2, 2] + [6] * 12, [4, 4] + [5] * 12 + [6] * 2]
    assert steps.tolist() == [[0, 1, 0, 1] + [0] * 12, [0, 1] + list(range(12)) + [0] * 2]
    sizes = members @ torch.bincount(train.task_index, minlength=6).double()
    # 4 x 2 <= 24 and 10 x 2 <= 60: compressed (rows 0 and 3 factored together, padded
    # to 8; row 2 to 16); 14 x 2 > 24: on its examples
    chosen = fit_shifts(train, members, l2=0.2, flow_steps=3, gram=gram, curvature=curvature)
    on_examples = fit_shifts(train, members, l2=0.2, flow_steps=3, gram=gram)
    assert torch.equal(chosen[1], on_examples[1])
    for row in (0, 2, 3):
        alone = compressed_flow(curvature, holding[row : row + 1], sizes[row : row + 1],
                                0.2, 3)
        assert torch.equal(chosen[row], alone[0])
    torch.testing.assert_close(chosen, fit_shifts(train, members, l2=0.2, flow_steps=3,
                                                  space="features"), rtol=1e-8, atol=1e-12)


def test_subsets_on_their_columns_are_compressed_when_their_members_keep_few_directions(
    monkeypatch,
):
    """A subset with more training examples than columns (solved on its c + m b columns)
    goes to its members' kept directions when they are at most half its columns (2 q <=
    c + m b) and the columns are at least MIN_COMPRESSED_COLUMNS (here 0; 52 columns stay
    below the default): the same shift as the column solve when only rounding is cut. A
    subset with a member of full rank stays on its columns."""
    train = with_a_full_rank_task(low_rank_split(30, 6, seed=24), task=5, seed=25)
    statistics = per_task_statistics(train, 6)
    members = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.float64)
    assert not example_space_rows(statistics, members).any()
    gram = TrainingGram(train, 6)
    curvature = compress_curvature(gram, 0.2, tolerance=1e-9)
    holding = member_lists(members)
    ranks, columns = curvature.subset_ranks(holding), subset_columns(statistics, members)
    assert 2 * ranks[0] <= columns[0] and 2 * ranks[1] > columns[1]
    sizes = members @ statistics.counts
    exact = fit_shifts(train, members, l2=0.2, flow_steps=3, statistics=statistics)
    assert linearized.MIN_COMPRESSED_COLUMNS > int(columns.max())
    assert torch.equal(fit_shifts(train, members, l2=0.2, flow_steps=3, statistics=statistics,
                                  gram=gram, curvature=curvature), exact)
    monkeypatch.setattr(linearized, "MIN_COMPRESSED_COLUMNS", 0)
    chosen = fit_shifts(train, members, l2=0.2, flow_steps=3, statistics=statistics,
                        gram=gram, curvature=curvature)
    assert torch.equal(chosen[0], compressed_flow(curvature, holding[:1], sizes[:1], 0.2, 3)[0])
    assert torch.equal(chosen[1], exact[1])
    torch.testing.assert_close(chosen, exact, rtol=1e-8, atol=1e-12)


def test_direction_blocks_are_formed_for_the_pairs_of_members_only(monkeypatch):
    """The compressed systems read F_t^T F_u and F_t^T g_u for pairs of members only:
    fill_pairs forms exactly those blocks (equal to the products of the directions and
    gradients, zeros past each task's rank; task 5 keeps more directions than the others),
    no others, and gives the same bits whether the pairs come at once or one at a time."""
    train = with_a_full_rank_task(low_rank_split(12, 6, seed=26, noise=1e-2), task=5, seed=27)
    gram = TrainingGram(train, 6)
    members = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 1]], dtype=torch.float64)
    holding = member_lists(members)
    together = compress_curvature(gram, 0.2, tolerance=0.1)
    ranks = together.ranks.tolist()
    assert min(ranks[:-1]) > 1 and len(set(ranks[:-1])) > 1
    assert together.pair_bytes(holding) == 13 * together.block_size**2 * 8
    together.fill_pairs(holding)
    met = torch.zeros(7, 7, dtype=torch.bool)
    for pair in ((0, 1), (3, 5)):
        for first in pair:
            for second in pair:
                met[first, second] = True
    met[6, :] = met[:, 6] = True  # the padding task's zero block
    assert torch.equal(together.pair_block >= 0, met)
    assert len(together.blocks) == 13  # the zero block and 6 unordered pairs, both ways

    def factors(task):
        # [g_t, F_t] (d, M): the gradient, then the directions padded to M with zeros
        rows = together.directions[together.offsets[task] : together.offsets[task] + ranks[task]]
        padded = rows.new_zeros(together.block_size, rows.shape[1])
        padded[0] = together.gradients[task]
        padded[1 : 1 + ranks[task]] = rows
        return padded.T

    steps = torch.arange(together.block_size)
    flat = together.blocks.view(-1)
    for first, second in torch.nonzero(met[:6, :6]).tolist():
        read = flat[together.block_entries(torch.tensor(first), steps[:, None],
                                           torch.tensor(second), steps[None, :])]
        torch.testing.assert_close(read, factors(first).T @ factors(second), rtol=1e-12,
                                   atol=1e-12)
    padding = flat[together.block_entries(torch.tensor(6), steps[:, None], torch.tensor(2),
                                          steps[None, :])]
    assert padding.abs().max() == 0
    monkeypatch.setattr(linearized, "PAIR_BATCH_BYTES", 1)
    apart = compress_curvature(gram, 0.2, tolerance=0.1)
    apart.fill_pairs(holding[1:])
    apart.fill_pairs(holding[:1])
    apart.fill_pairs(holding)  # nothing new
    assert len(apart.blocks) == 13
    for first, second in torch.nonzero(met).tolist():
        place = (torch.tensor(first), steps[:, None], torch.tensor(second), steps[None, :])
        assert torch.equal(apart.blocks.view(-1)[apart.block_entries(*place)],
                           flat[together.block_entries(*place)])


@pytest.mark.parametrize("space", ["features", "examples"])
def test_systems_factored_a_few_at_a_time_give_the_same_shifts(monkeypatch, space):
    """The batched systems (on the columns, and the compressed ones of the subsets solved
    on their examples) are factored and solved in pieces of at most SYSTEM_CACHE_BYTES:
    one system at a time gives the same bits as the whole batch at once."""
    train = low_rank_split(12, 6, seed=22)
    gram = TrainingGram(train, 6)
    curvature = compress_curvature(gram, 0.2, tolerance=1e-9)
    generator = torch.Generator().manual_seed(23)
    members = (torch.rand(40, 6, generator=generator) < 0.4).double()
    members[members.sum(dim=1) == 0, 0] = 1.0

    def shifts():
        return fit_shifts(train, members, l2=0.2, flow_steps=3, gram=gram,
                          curvature=curvature, space=space)
    whole = shifts()
    monkeypatch.setattr(linearized, "SYSTEM_CACHE_BYTES", 1)
    assert torch.equal(shifts(), whole)


def test_estimate_values_compresses_the_curvature_by_its_setting(caplog, monkeypatch):
    """curvature_tolerance 0 (the library's default) is the exact path; a tolerance that
    drops the noise directions of rank-2 tasks moves the losses a little and nothing else,
    and the log says how many subsets were solved on the kept directions; when the blocks
    of the pairs its subsets hold exceed the memory budget, none is compressed."""
    train = low_rank_split(8, 5, seed=18, noise=1e-3)
    val = headed_split(6, 5, shared=40, head=6, seed=19)
    subsets = pd.DataFrame({"subset_id": [0, 0, 0, 1, 1, 2, 2, 2, 2],
                            "task": ["t0", "t1", "t2", "t3", "t4", "t0", "t2", "t3", "t4"]})
    names = [f"t{i}" for i in range(5)]
    exact = GradientEstimateSettings(0.5, 1, None, flow_steps=4)
    assert exact.curvature_tolerance == 0.0
    reference = estimate_values(train, val, subsets, names, exact)
    with caplog.at_level(logging.INFO, logger="taskgroup.estimate.linearized"):
        kept = estimate_values(
            train, val, subsets, names,
            GradientEstimateSettings(0.5, 1, None, 4, curvature_tolerance=0.1),
        )
    assert ("3 with fewer training examples than columns; 3 solved on their members' kept "
            "curvature directions instead, each task's 2 to 2") in caplog.text
    pd.testing.assert_frame_equal(kept.drop(columns=["loss", "metric"]),
                                  reference.drop(columns=["loss", "metric"]))
    changed = (kept["loss"] - reference["loss"]).abs() / reference["loss"]
    assert 0 < changed.max() < 1e-4
    # the pairs' blocks over the memory budget: the exact path, and the log says why
    caplog.clear()
    with monkeypatch.context() as patch, caplog.at_level(logging.INFO,
                                                         logger="taskgroup.estimate.linearized"):
        patch.setattr(linearized.CompressedCurvature, "pair_bytes",
                      lambda self, holding: 600 * 10**6)
        over = estimate_values(
            train, val, subsets, names,
            GradientEstimateSettings(0.5, 1, None, 4, curvature_tolerance=0.1), memory_mb=512,
        )
    assert "curvature not compressed: its cache exceeds the memory budget" in caplog.text
    pd.testing.assert_frame_equal(over, reference)
    with pytest.raises(ValueError, match="curvature_tolerance = -1; expected a number >= 0"):
        GradientEstimateSettings(0.5, 1, None, curvature_tolerance=-1)


def test_subset_step_scales_are_the_fourth_root_of_the_overall_over_the_subset_moment():
    """sigma_S(c) = (v(c) / v_S(c))^(1/4), v the mean of l'^2 z^2 over all examples and v_S
    over the subset's (by hand on a split of 3 tasks), 1 where the subset's is 0."""
    train = headed_split(5, 3, shared=3, head=2, seed=31, regression_tasks=(1,))
    first, _ = hand_derivatives(train)
    squared = (first[:, None] * train.z.double()) ** 2
    sums = task_squared_gradients(train, 3)
    assert sums.shape == (4, train.z.shape[1]) and torch.equal(sums[3], torch.zeros(sums.shape[1]))
    for task in range(3):
        torch.testing.assert_close(sums[task], squared[train.task_index == task].sum(dim=0))
    holding = torch.tensor([[0, 2], [1, 3]])  # the second subset: task 1 alone (padded)
    scales = subset_step_scales(sums, torch.full((3,), 5.0, dtype=torch.float64), holding)
    overall = squared.mean(dim=0)
    for row, tasks in enumerate([[0, 2], [1]]):
        own = squared[torch.isin(train.task_index, torch.tensor(tasks))].mean(dim=0)
        expected = torch.where(own > 0, (overall / own.clamp_min(1e-300)) ** 0.25, 1.0)
        expected = torch.where(overall > 0, expected, 1.0)
        torch.testing.assert_close(scales[row], expected)
    # column 0 no example moves, column 1 task 0's only: 1 where the subset misses it
    assert scales[0, 0] == 1 and scales[1, 0] == 1 and scales[1, 1] == 1
    assert scales[0, 1] == pytest.approx((2 / 3) ** 0.25)


@pytest.mark.parametrize("space", ["features", "examples"])
def test_a_subset_in_its_own_metric_is_the_fixed_fit_on_its_rescaled_gradients(space):
    """With scales, a subset's shift is sigma * w', w' the fixed-metric fit of the same
    subset on the gradients sigma * z, on its columns and on its examples alike."""
    train = headed_split(6, 4, shared=5, head=3, seed=32, regression_tasks=(2,))
    members = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]], dtype=torch.float64)
    sums = task_squared_gradients(train, 4)
    scales = subset_step_scales(sums, per_task_statistics(train, 4).counts,
                                member_lists(members))
    assert not torch.allclose(scales, torch.ones_like(scales))
    fitted = fit_shifts(train, members, l2=0.3, flow_steps=4, space=space, scales=scales)
    for row in range(2):
        rescaled = ProjectedSplit(train.z * scales[row], train.base, train.labels,
                                  train.task_index, train.regression)
        expected = scales[row] * fit_shifts(rescaled, members[row : row + 1], l2=0.3,
                                            flow_steps=4, space=space)[0]
        torch.testing.assert_close(fitted[row], expected, rtol=1e-9, atol=1e-12)
    ones = fit_shifts(train, members, l2=0.3, flow_steps=4, space=space,
                      scales=torch.ones_like(scales))
    torch.testing.assert_close(ones, fit_shifts(train, members, l2=0.3, flow_steps=4,
                                                space=space), rtol=1e-9, atol=1e-12)


def test_estimate_values_in_each_subsets_metric_compresses_nothing(caplog):
    """step_scale "subset": every subset solved exactly in its own metric (the log says
    so), whatever curvature_tolerance; the losses differ from the fixed metric's. The
    settings refuse another step_scale and more Newton steps with "subset", and fit_shifts
    refuses scales with compressed curvature."""
    train = low_rank_split(8, 5, seed=18, noise=1e-3)
    val = headed_split(6, 5, shared=40, head=6, seed=19)
    subsets = pd.DataFrame({"subset_id": [0, 0, 0, 1, 1], "task": ["t0", "t1", "t2", "t3", "t4"]})
    names = [f"t{i}" for i in range(5)]
    fixed = estimate_values(train, val, subsets, names,
                            GradientEstimateSettings(0.5, 1, None, 4, curvature_tolerance=0.1))
    with caplog.at_level(logging.INFO, logger="taskgroup.estimate.linearized"):
        own = estimate_values(train, val, subsets, names, GradientEstimateSettings(
            0.5, 1, None, 4, curvature_tolerance=0.1, step_scale="subset"))
    assert "each subset in its own metric (step_scale subset), none compressed" in caplog.text
    assert (own["loss"] - fixed["loss"]).abs().max() > 1e-6
    members = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.float64)
    scales = subset_step_scales(task_squared_gradients(train, 5),
                                per_task_statistics(train, 5).counts, member_lists(members))
    exact = fit_shifts(train, members, l2=0.5, flow_steps=4, scales=scales)
    weights = linearized.linearized_values(val, exact, members, None, names, only_members=True)
    torch.testing.assert_close(
        torch.tensor(own.loc[own["subset_id"] == 0, "loss"].to_numpy()),
        weights[0][0, :3], rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="step_scale = 'adam'; expected one of"):
        GradientEstimateSettings(0.5, 1, None, step_scale="adam")
    with pytest.raises(ValueError, match="step_scale = subset needs newton_steps 1; found 2"):
        GradientEstimateSettings(0.5, 2, None, step_scale="subset")
    with pytest.raises(ValueError, match="step_scale 'auto': resolve it for the projection"):
        estimate_values(train, val, subsets, names,
                        GradientEstimateSettings(0.5, 1, None, step_scale="auto"))
    curvature = compress_curvature(TrainingGram(train, 5), 0.5, 0.1)
    with pytest.raises(ValueError, match="no compressed curvature, newton_steps 1"):
        fit_shifts(train, members, l2=0.5, curvature=curvature, scales=scales)
