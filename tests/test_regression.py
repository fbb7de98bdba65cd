"""Regression tasks end to end: squared-error training, R^2, least-squares offset estimates,
problems mixing binary and regression tasks."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, r2_score
from torch.nn import functional as F

from taskgroup.data.designs import random_design
from taskgroup.data.examples import build_task_data
from taskgroup.estimate.finetune import FinetuneSettings, finetune_values
from taskgroup.estimate.linearized import (
    ProjectedSplit,
    estimate_values,
    fit_shifts,
    linearized_values,
)
from taskgroup.estimate.projection import make_projector, project_examples
from taskgroup.estimate.settings import GradientEstimateSettings, ProjectionSettings
from taskgroup.estimate.validity import first_order_validity
from taskgroup.models.network import MultiHeadNet
from taskgroup.models.training import TrainSettings, evaluate, fit, train_new_model
from taskgroup.report.validation import per_task_relative_error


def linear_tables(
    n_groups=2, tasks_per_group=3, n_train=80, n_val=60, n_test=60, n_features=5,
    noise=0.3, spread=0.2, binary=(), seed=0,
):
    """Tasks with linear targets y = x^T w_t + noise, w_t close to its group's teacher;
    the tasks in ``binary`` get labels 1[x^T w_t > 0] instead."""
    rng = np.random.default_rng(seed)
    teachers = rng.standard_normal((n_groups, n_features))
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    frames, rows = [], []
    for index in range(n_groups * tasks_per_group):
        task, group = f"t{index}", index // tasks_per_group
        weight = teachers[group] + spread * rng.standard_normal(n_features)
        x = rng.standard_normal((sum(sizes.values()), n_features))
        signal = x @ weight
        kind = "binary" if index in binary else "regression"
        y = (signal > 0).astype(float) if kind == "binary" else signal + noise * (
            rng.standard_normal(len(x)))
        frame = pd.DataFrame(x.astype(np.float32), columns=[f"feature_{i}" for i in
                                                             range(n_features)])
        frame.insert(0, "split", np.repeat(list(sizes), list(sizes.values())))
        frame.insert(0, "task", task)
        frame["label"] = y.astype(np.float32)
        frames.append(frame)
        rows.append({"task": task, "task_index": index, "task_type": kind, "n_train": n_train,
                     "n_val": n_val, "n_test": n_test, "planted_group": group})
    tasks = pd.DataFrame(rows)
    tasks["planted_group"] = tasks["planted_group"].astype("Int64")
    return pd.concat(frames, ignore_index=True), tasks


def test_squared_error_training_lowers_the_mse_and_r2_matches_sklearn():
    data = build_task_data(*linear_tables())
    assert data.types == ["regression"] * 6 and bool(data.splits["train"].regression.all())
    tasks = torch.arange(6)
    torch.manual_seed(0)
    model = MultiHeadNet(data.n_features, data.n_tasks, [8])
    before = evaluate(model, data, tasks, splits=("val",))
    fit(model, data, tasks, TrainSettings(epochs=40, lr=0.02, batch_size=32), seed=0)
    after = evaluate(model, data, tasks, splits=("val",)).set_index("task")
    assert after["loss"].mean() < 0.3 * before["loss"].mean()
    val = data.splits["val"]
    mask = val.task_index == 2
    with torch.no_grad():
        predictions = model(val.features[mask], val.task_index[mask])
    labels = val.labels[mask]
    assert after.loc["t2", "loss"] == pytest.approx(F.mse_loss(predictions, labels).item(),
                                                     rel=1e-5)
    assert after.loc["t2", "metric"] == pytest.approx(
        r2_score(labels.numpy(), predictions.numpy()), abs=1e-6
    )
    assert (after["metric"] > 0.8).all()  # a linear target is learned well


def test_mixed_binary_and_regression_tasks():
    data = build_task_data(*linear_tables(binary=(0, 4)))
    assert data.types == ["binary", "regression", "regression", "regression", "binary",
                          "regression"]
    val = data.splits["val"]
    torch.testing.assert_close(val.regression, (val.task_index != 0) & (val.task_index != 4))
    tasks = torch.arange(6)
    model = train_new_model(data, tasks, [8], TrainSettings(epochs=30, lr=0.02, batch_size=32,
                                                            select_best_epoch=True),
                            seed=0, device=torch.device("cpu"))
    table = evaluate(model, data, tasks, splits=("val",)).set_index("task")
    with torch.no_grad():
        outputs = model(val.features, val.task_index)
    for index, name in enumerate(data.task_names):
        mask = val.task_index == index
        out, y = outputs[mask], val.labels[mask]
        if index in (0, 4):
            loss = F.binary_cross_entropy_with_logits(out, y).item()
            metric = accuracy_score(y.numpy(), out.numpy() > 0)
        else:
            loss = F.mse_loss(out, y).item()
            metric = r2_score(y.numpy(), out.numpy())
        assert table.loc[name, "loss"] == pytest.approx(loss, rel=1e-5)
        assert table.loc[name, "metric"] == pytest.approx(metric, abs=1e-6)
    with pytest.raises(ValueError, match=r"evaluation.metric = 'roc_auc' .* task 't1'"):
        evaluate(model, data, tasks, ("val",), metric="roc_auc")
    with pytest.raises(ValueError, match=r"evaluation.metric = 'r2' .* task 't0' is a binary"):
        evaluate(model, data, tasks, ("val",), metric="r2")
    # the first-order check works for both loss types
    tuned = copy.deepcopy(model)
    fit(tuned, data, tasks, TrainSettings(epochs=1, lr=0.005, batch_size=32), seed=1)
    curve = first_order_validity(model, tuned, data, tasks, [0.0, 0.1], subset_id=0)
    assert curve.loc[curve["scale"] == 0.0, "relative_error"].max() < 1e-6


def test_bad_task_types_and_binary_labels_are_rejected():
    examples, tasks = linear_tables(binary=(0,))
    bad = tasks.copy()
    bad.loc[2, "task_type"] = "ordinal"
    with pytest.raises(ValueError, match=r"'task_type' has \['ordinal'\] \(task 't2'\)"):
        build_task_data(examples, bad)
    examples.loc[examples["task"] == "t0", "label"] = 2.0
    with pytest.raises(ValueError, match="label' of binary task 't0' has the value 2.0"):
        build_task_data(examples, tasks)


def regression_split(n_per_task, n_tasks, dim, shift, noise, seed):
    generator = torch.Generator().manual_seed(seed)
    n = n_per_task * n_tasks
    z = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    base = torch.randn(n, generator=generator, dtype=torch.float64)
    labels = base + z @ shift + noise * torch.randn(n, generator=generator, dtype=torch.float64)
    task_index = torch.arange(n_tasks).repeat_interleave(n_per_task)
    return ProjectedSplit(z, base, labels, task_index, torch.ones(n, dtype=torch.bool))


def test_least_squares_offset_estimate_recovers_the_exact_shift_of_a_linear_model():
    shift = torch.tensor([0.8, -0.5, 0.3, 0.0], dtype=torch.float64)
    exact = regression_split(50, 2, 4, shift, noise=0.0, seed=0)
    members = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    fitted = fit_shifts(exact, members, l2=1e-10)[0]
    torch.testing.assert_close(fitted, shift, atol=1e-7, rtol=0)  # one step is exact
    noisy = regression_split(300, 3, 4, shift, noise=0.5, seed=1)
    members = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    one = fit_shifts(noisy, members, l2=0.1)[0]
    torch.testing.assert_close(fit_shifts(noisy, members, l2=0.1, newton_steps=3)[0], one)
    # the ridge solution of the subset's own examples: (2 Z'Z / n + l2 I) w = 2 Z'(y - b) / n
    keep = noisy.task_index != 1
    z, residual = noisy.z[keep], noisy.labels[keep] - noisy.base[keep]
    n = z.shape[0]
    ridge = torch.linalg.solve(2 * z.T @ z / n + 0.1 * torch.eye(4, dtype=torch.float64),
                               2 * z.T @ residual / n)
    torch.testing.assert_close(one, ridge)


def test_linearized_values_of_regression_and_mixed_tasks():
    val = regression_split(40, 3, 3, torch.zeros(3, dtype=torch.float64), 0.5, seed=2)
    val.labels[:40] = (val.labels[:40] > 0).double()  # task 0 is binary
    val.regression[:40] = False
    weights = torch.randn(2, 3, dtype=torch.float64)
    members = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    loss, metric = linearized_values(val, weights, members, ["accuracy", "r2", "r2"])
    for task in (0, 1):
        rows = val.task_index == task
        outputs = val.base[rows] + val.z[rows] @ weights[1]
        y = val.labels[rows]
        if task == 0:
            expected = F.binary_cross_entropy_with_logits(outputs, y).item()
            expected_metric = accuracy_score(y.numpy(), outputs.numpy() > 0)
        else:
            expected, expected_metric = F.mse_loss(outputs, y).item(), r2_score(y, outputs)
        assert loss[1, task].item() == pytest.approx(expected)
        assert metric[1, task].item() == pytest.approx(expected_metric)


def gradient_against_finetuning(tables, n_subsets=16, seed=0):
    """Median relative error of the gradient estimate and of the no-change estimate against
    real fine-tuning, per task type, on one small problem."""
    data = build_task_data(*tables)
    every = torch.arange(data.n_tasks)
    meta = train_new_model(data, every, [4], TrainSettings(epochs=40, lr=0.01, batch_size=32),
                           seed=seed, device=torch.device("cpu"))
    projector = make_projector(
        meta, ProjectionSettings("kronecker", "rademacher", 0, dim=1024, nonzeros=None)
    )
    splits = {}
    for split in ("train", "val"):
        tensors = data.splits[split]
        z, base = project_examples(meta, projector, tensors.features, tensors.task_index, 4096)
        splits[split] = ProjectedSplit(z, base, tensors.labels, tensors.task_index,
                                       tensors.regression)
    subsets = random_design(data.task_names, 3, n_subsets, seed)
    estimate = estimate_values(splits["train"], splits["val"], subsets, data.task_names,
                                GradientEstimateSettings(0.2, 1, None), task_types=data.types)
    settings = TrainSettings(epochs=5, lr=0.01, batch_size=32)
    real = finetune_values(meta, data, subsets, FinetuneSettings(settings, seed=0))
    base = evaluate(meta, data, every, ("val",)).set_index("task")["loss"]
    trivial = real.assign(loss=base.loc[real["task"]].to_numpy())
    types = dict(zip(data.task_names, data.types))
    result = {}
    for name, values in (("gradient", estimate), ("no_change", trivial)):
        errors = per_task_relative_error(values, real)
        errors["type"] = errors["task"].map(types)
        result[name] = errors.groupby("type")["relative_error"].median()
    return result


def test_gradient_estimate_tracks_real_finetuning_of_regression_tasks():
    result = gradient_against_finetuning(linear_tables(tasks_per_group=4, seed=3))
    gradient, no_change = result["gradient"]["regression"], result["no_change"]["regression"]
    assert gradient < 0.5 * no_change, result


def test_estimate_subsets_with_task_types_and_a_configured_metric():
    shift = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64)
    train = regression_split(100, 3, 3, shift, 0.3, seed=5)
    val = regression_split(60, 3, 3, shift, 0.3, seed=6)
    for split in (train, val):  # task 0 binary, tasks 1 and 2 regression
        first = split.task_index == 0
        split.labels[first] = (split.labels[first] > 0).double()
        split.regression[first] = False
    names, types = ["a", "b", "c"], ["binary", "regression", "regression"]
    subsets = pd.DataFrame({"subset_id": [0, 0, 1, 1], "task": ["a", "b", "b", "c"]})
    settings = GradientEstimateSettings(l2=0.1, newton_steps=1, max_relative_shift=None)
    table = estimate_values(train, val, subsets, names, settings, task_types=types)
    assert np.isfinite(table["loss"]).all() and np.isfinite(table["metric"]).all()
    assert table.loc[table["task"] == "a", "metric"].between(0, 1).all()
    with pytest.raises(ValueError, match=r"evaluation.metric = 'roc_auc' .* task 'b'"):
        estimate_values(train, val, subsets, names, settings, task_types=types, metric="roc_auc")
    with pytest.raises(ValueError, match="regression mask disagrees with task_types"):
        estimate_values(train, val, subsets, names, settings)
