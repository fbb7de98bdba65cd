import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from taskgroup.estimate.linearized import (
    ProjectedSplit,
    cap_shifts,
    estimate_values,
    fit_shifts,
    linearized_values,
    per_task_statistics,
    subsets_per_batch,
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


def test_subset_sums_from_the_membership_equal_the_dense_sum_over_every_task():
    """Each subset adds its own members' statistics: the same fit as the explicit solve of
    (sum_t m_st H_t / n_S + l2 I) w = -sum_t m_st g_t / n_S over all k tasks."""
    train = synthetic_split(60, 5, 4, torch.tensor([0.3, -0.1, 0.2, 0.0]), seed=5)
    train.task_index[train.task_index == 4] = 3  # a task without examples
    members = torch.tensor(
        [[1, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1]],
        dtype=torch.float64,
    )
    statistics = per_task_statistics(train, 5)
    assert statistics.counts.tolist() == [60, 60, 60, 120, 0]
    fitted = fit_shifts(train, members, l2=0.2, statistics=statistics)
    sizes = members @ statistics.counts
    hessians = torch.einsum("sk,kde->sde", members, statistics.hessians) / sizes[:, None, None]
    gradients = members @ statistics.gradients / sizes[:, None]
    expected = -torch.linalg.solve(hessians + 0.2 * torch.eye(4, dtype=torch.float64),
                                   gradients)
    torch.testing.assert_close(fitted, expected)
    with pytest.raises(ValueError, match="no training examples"):
        fit_shifts(train, torch.tensor([[0, 0, 0, 0, 1.0]], dtype=torch.float64), l2=0.2)


def test_shifts_solved_on_the_subsets_own_coordinates_equal_the_full_solve():
    """Unprojected gradients: 3 shared (trunk) coordinates and 2 per task (its head), zero
    for the other tasks' examples. Each subset solves on the trunk and its members' heads
    only; the result equals the dense solve over all 3 + 2 k coordinates, 0 on the others."""
    n_tasks, shared = 6, 3
    train = synthetic_split(40, n_tasks, shared + 2 * n_tasks, torch.zeros(shared + 2 * n_tasks),
                            seed=8)
    own = torch.zeros_like(train.z, dtype=torch.bool)
    own[:, :shared] = True
    for task in range(n_tasks):
        own[train.task_index == task, shared + 2 * task : shared + 2 * task + 2] = True
    train.z = torch.where(own, train.z, torch.zeros_like(train.z))
    members = torch.tensor(
        [[1, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0], [0, 1, 0, 1, 0, 1], [0, 0, 0, 1, 1, 0],
         [1, 1, 1, 1, 1, 1]], dtype=torch.float64,
    )  # widths 5, 7, 9, 7 and all 15 coordinates: solved in four groups
    statistics = per_task_statistics(train, n_tasks)
    fitted = fit_shifts(train, members, l2=0.1, statistics=statistics)
    sizes = members @ statistics.counts
    hessians = torch.einsum("sk,kde->sde", members, statistics.hessians) / sizes[:, None, None]
    gradients = members @ statistics.gradients / sizes[:, None]
    dim = shared + 2 * n_tasks
    expected = -torch.linalg.solve(hessians + 0.1 * torch.eye(dim, dtype=torch.float64),
                                   gradients)
    torch.testing.assert_close(fitted, expected, atol=1e-12, rtol=1e-10)
    assert fitted[1, shared + 2 : shared + 4].abs().max() == 0  # task 1's head, not a member
    assert fitted[1, shared + 4 : shared + 6].abs().min() > 0  # task 2's head, a member


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
