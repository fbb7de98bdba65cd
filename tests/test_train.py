import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from taskgroup.estimate.finetune import FinetuneSettings, finetune_values
from taskgroup.models.network import MultiHeadNet, load_checkpoint, save_checkpoint
from taskgroup.models.training import (
    TrainSettings,
    evaluate,
    fit,
    per_task_losses,
    train_new_model,
)
from taskgroup.seeding import derived_seed

CPU = torch.device("cpu")


def test_forward_uses_each_examples_own_head():
    torch.manual_seed(0)
    model = MultiHeadNet(n_features=3, n_tasks=2, hidden_sizes=[4])
    features = torch.randn(5, 3)
    task_index = torch.tensor([0, 1, 1, 0, 1])
    hidden = model.trunk(features)
    expected = torch.stack(
        [hidden[i] @ model.head_weight[t] + model.head_bias[t] for i, t in enumerate(task_index)]
    )
    torch.testing.assert_close(model(features, task_index), expected)


def test_training_lowers_the_loss_and_evaluate_matches_a_direct_computation(small_data):
    tasks = torch.tensor([0, 1, 2])
    settings = TrainSettings(epochs=30, lr=0.02, batch_size=32)
    torch.manual_seed(0)
    model = MultiHeadNet(small_data.n_features, small_data.n_tasks, [4])
    before = evaluate(model, small_data, tasks, splits=("train",))["loss"].mean()
    history = fit(model, small_data, tasks, settings, seed=0)
    after = evaluate(model, small_data, tasks, splits=("train",))
    assert history[-1] < history[0]
    assert after["loss"].mean() < 0.8 * before
    val = small_data.splits["val"]
    mask = val.task_index == 1
    with torch.no_grad():
        logits = model(val.features[mask], val.task_index[mask])
    table = evaluate(model, small_data, tasks, splits=("val",)).set_index("task")
    direct_loss = F.binary_cross_entropy_with_logits(logits, val.labels[mask]).item()
    direct_accuracy = ((logits > 0).float() == val.labels[mask]).float().mean().item()
    assert table.loc["task_1", "loss"] == pytest.approx(direct_loss, rel=1e-5)
    assert table.loc["task_1", "metric"] == pytest.approx(direct_accuracy)
    assert table.loc["task_1", "n_examples"] == 40


def test_evaluate_on_the_tasks_own_rows_equals_a_pass_over_the_whole_split(small_data):
    # evaluate runs the model on the chosen tasks' rows only; every task's rows at once
    # (other matrix shapes) give the same losses to float rounding
    torch.manual_seed(0)
    model = MultiHeadNet(small_data.n_features, small_data.n_tasks, [64, 64])
    tasks = torch.tensor([5, 1, 3])
    loss, counts, _ = per_task_losses(model, small_data.splits["val"], small_data.n_tasks)
    table = evaluate(model, small_data, tasks, splits=("val",))
    assert table["task"].tolist() == ["task_5", "task_1", "task_3"]
    torch.testing.assert_close(torch.tensor(table["loss"].to_numpy(), dtype=loss.dtype),
                               loss[tasks], rtol=1e-6, atol=0)
    assert table["n_examples"].tolist() == counts[tasks].int().tolist()


def test_same_seed_same_model(small_data):
    settings = TrainSettings(epochs=3, lr=0.01, batch_size=16, select_best_epoch=True)
    tasks = torch.tensor([0, 4])
    first = train_new_model(small_data, tasks, [3], settings, seed=7, device=CPU)
    second = train_new_model(small_data, tasks, [3], settings, seed=7, device=CPU)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_derived_seed_is_stable_and_distinguishes_parts():
    assert derived_seed(0, 1) == derived_seed(0, 1)
    assert derived_seed(0, 1) != derived_seed(0, 2)
    assert derived_seed(0, "task_a") != derived_seed(0, "task_b")
    assert 0 <= derived_seed(3, "x") < 2**63


def test_checkpoint_round_trip_and_task_order_check(tmp_path, small_data):
    model = MultiHeadNet(small_data.n_features, small_data.n_tasks, [3])
    path = tmp_path / "model.pt"
    save_checkpoint(model, small_data.task_names, path)
    loaded = load_checkpoint(path, small_data.task_names)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="rerun train_meta_init"):
        load_checkpoint(path, list(reversed(small_data.task_names)))


def test_subset_values_do_not_depend_on_chunking(small_data):
    torch.manual_seed(0)
    meta = MultiHeadNet(small_data.n_features, small_data.n_tasks, [3])
    subsets = pd.DataFrame(
        {"subset_id": [0, 0, 1, 1, 2, 2], "task": ["task_0", "task_1", "task_2", "task_5",
                                                   "task_3", "task_8"]}
    )
    settings = TrainSettings(epochs=2, lr=0.01, batch_size=16)
    together = finetune_values(meta, small_data, subsets, FinetuneSettings(settings, seed=0))
    apart = pd.concat(
        [finetune_values(meta, small_data, part, FinetuneSettings(settings, seed=0))
         for _, part in subsets.groupby(subsets["subset_id"] >= 1)],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(together, apart)
    assert set(together.columns) == {"subset_id", "task", "split", "loss", "metric", "estimator"}
    assert (together["estimator"] == "finetune").all() and (together["split"] == "val").all()
    assert np.isfinite(together["loss"]).all()
