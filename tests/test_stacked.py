"""Many group models trained in one process: the same models as training each alone, and a
batch that reuses the groups it already has."""

import copy
import logging
from dataclasses import replace

import pandas as pd
import pytest
import torch
from conftest import small_spec
from test_regression import linear_tables

from taskgroup.data.datasets.planted import generate_planted
from taskgroup.data.examples import build_task_data
from taskgroup.data.tables import GROUP_RESULTS, read_table, write_table
from taskgroup.group.groupings import group_key
from taskgroup.models.network import MultiHeadNet, load_checkpoint
from taskgroup.models.stacked import ModelSpec, train_new_models
from taskgroup.models.training import (
    TrainingDivergedError,
    TrainSettings,
    budget_epochs,
    fit,
    patience_epochs,
    per_task_losses,
    train_new_model,
)
from taskgroup.stages.train import train_group_models

CPU = torch.device("cpu")


def assert_same_models(data, specs, hidden_sizes, settings, tolerance):
    stacked = train_new_models(data, specs, hidden_sizes, settings, CPU)
    for spec, (model, history) in zip(specs, stacked):
        histories = []
        own = replace(settings, epochs=spec.epochs or settings.epochs,
                      patience=spec.patience or settings.patience)
        alone = train_new_model(data, spec.task_indices, hidden_sizes, own, spec.seed, CPU,
                                task_weights=spec.task_weights, after_training=histories.append)
        found_state = model.state_dict()
        for name, expected in alone.state_dict().items():
            found = found_state[name]
            if name.startswith("head_"):  # the model's own tasks' heads (module docstring)
                found, expected = found[spec.task_indices], expected[spec.task_indices]
            torch.testing.assert_close(found, expected, atol=tolerance, rtol=0, msg=name)
        assert history.start == pytest.approx(histories[0].start, abs=1e-6)
        assert history == pytest.approx(list(histories[0]), abs=1e-5)
    return stacked


def test_stacked_models_equal_models_trained_alone_with_early_stopping_and_weight_decay(
    small_data,
):
    # groups of 1 to 9 tasks: their epochs take 1 to 9 steps, so most models sit out steps
    groups = [[0, 1, 2], [3], [4, 5, 6, 7, 8], list(range(9))]
    specs = [ModelSpec(torch.tensor(g), seed) for g in groups for seed in (0, 7)]
    settings = TrainSettings(epochs=12, lr=0.01, batch_size=16, weight_decay=0.001,
                             select_best_epoch=True)
    assert_same_models(small_data, specs, [4, 3], settings, tolerance=1e-5)


def test_stacked_models_equal_alone_on_mixed_regression_tasks_with_loss_weights():
    examples, tasks = linear_tables(binary=(0, 4))
    data = build_task_data(examples, tasks)
    weights = torch.linspace(0.5, 1.5, data.n_tasks)
    specs = [ModelSpec(torch.tensor([0, 1, 2]), 3, weights),
             ModelSpec(torch.tensor([3, 4, 5]), 4), ModelSpec(torch.tensor([1]), 5)]
    settings = TrainSettings(epochs=15, lr=0.02, batch_size=32, select_best_epoch=True)
    assert_same_models(data, specs, [5], settings, tolerance=1e-5)


def test_a_model_is_the_same_whatever_else_is_in_its_stack_and_the_same_bytes_twice(small_data):
    """Up to float rounding across stacks: some BLAS builds compute a matrix of a batched
    product with a kernel that depends on its place in the batch (MKL on an AMD EPYC: 1e-7
    relative after these 10 epochs; on Intel Xeons the bytes were equal). The same stack
    twice gives the same bytes, which is what makes a run reproducible: the stacks are a
    function of the config."""
    settings = TrainSettings(epochs=10, lr=0.01, batch_size=16, select_best_epoch=True)
    spec = ModelSpec(torch.tensor([0, 1, 2]), 5)
    others = [ModelSpec(torch.tensor(g), 1) for g in ([3], [4, 5], list(range(9)))]
    alone = train_new_models(small_data, [spec], [6], settings, CPU)[0][0]
    among = train_new_models(small_data, [*others, spec], [6], settings, CPU)[-1][0]
    again = train_new_models(small_data, [*others, spec], [6], settings, CPU)[-1][0]
    for first, second, third in zip(alone.state_dict().values(), among.state_dict().values(),
                                     again.state_dict().values()):
        torch.testing.assert_close(first, second, rtol=1e-5, atol=1e-7)
        assert torch.equal(second, third)


def test_stacked_models_with_a_patience_equal_models_trained_alone(small_data):
    # patience 2 of 40 epochs stops some models early, at different steps: the stack drops
    # them one after another while the others go on
    groups = [[0], [3], [1, 2], [4, 5, 6, 7, 8], list(range(9))]
    specs = [ModelSpec(torch.tensor(g), seed, patience=patience)
             for g in groups for seed, patience in ((0, None), (4, 6))]
    settings = TrainSettings(epochs=40, lr=0.05, batch_size=16, select_best_epoch=True,
                             patience=2)
    stacked = assert_same_models(small_data, specs, [4], settings, tolerance=1e-5)
    lengths = [len(history) for _, history in stacked]
    assert min(lengths) < 40 and len(set(lengths)) > 2


def test_training_stops_after_patience_epochs_without_a_lower_validation_loss(small_data):
    tasks = torch.tensor([0, 1, 2, 3])
    settings = TrainSettings(epochs=30, lr=0.05, batch_size=16, select_best_epoch=True)
    scores = []

    def record(epoch, model):
        losses, counts, _ = per_task_losses(model, small_data.splits["val"].select_tasks(tasks),
                                            small_data.n_tasks)
        scores.append(float(losses[counts > 0].mean()))

    torch.manual_seed(2)
    model = MultiHeadNet(small_data.n_features, small_data.n_tasks, [4])
    start = copy.deepcopy(model.state_dict())
    fit(model, small_data, tasks, settings, seed=2, after_epoch=record)
    patience = 3
    best, stop = 0, len(scores)
    for epoch, score in enumerate(scores, start=1):
        if score < min(scores[: epoch - 1], default=float("inf")):
            best = epoch
        if epoch - best >= patience:
            stop = epoch
            break
    assert stop < 30
    model.load_state_dict(start)
    history = fit(model, small_data, tasks, replace(settings, patience=patience), seed=2)
    assert len(history) == stop
    record(None, model)
    assert scores[-1] == pytest.approx(min(scores[:stop]), abs=1e-6)


def test_patience_is_a_share_of_each_models_epochs():
    assert patience_epochs(0.1, 100) == 10
    assert patience_epochs(0.1, 2345) == 235
    assert patience_epochs(0.1, 3) == 1
    assert patience_epochs(None, 100) is None
    with pytest.raises(ValueError, match="patience fraction 0 "):
        patience_epochs(0, 100)


def test_a_diverging_stacked_model_names_its_tasks_and_seed(small_data):
    settings = TrainSettings(epochs=3, lr=1e30, batch_size=16)
    with pytest.raises(TrainingDivergedError, match=r"tasks \[0, 1\], seed 3, with Adam.*lower"):
        train_new_models(small_data, [ModelSpec(torch.tensor([0, 1]), 3)], [4], settings, CPU)


@pytest.fixture
def tables_on_disk(tmp_path):
    examples, tasks = generate_planted(small_spec())
    write_table(examples, tmp_path / "examples.parquet")
    write_table(tasks, tmp_path / "tasks.parquet")
    return tmp_path


def run_batch(folder, groups, out, epochs=4, caplog=None):
    train_group_models(
        folder / "examples.parquet", folder / "tasks.parquet",
        {group_key(members): members for members in groups}, folder / out, folder / "models",
        [folder / "tasks.parquet"], [4],
        {"epochs": epochs, "lr": 0.02, "batch_size": 32, "weight_decay": 0.0}, [0, 1],
        selection={"fraction": 0.5, "seed": 0}, budget="epochs", patience=None,
    )
    return read_table(folder / out, GROUP_RESULTS)


def test_a_batch_trains_only_groups_it_has_no_model_for(tables_on_disk, caplog):
    folder = tables_on_disk
    first, second, third = ["task_0", "task_1"], ["task_2"], ["task_3", "task_4", "task_5"]
    with caplog.at_level(logging.INFO, logger="taskgroup.stages.train"):
        before = run_batch(folder, [first, second], "a.parquet")
    model = folder / "models" / group_key(first) / "model_seed1.pt"
    written = model.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="taskgroup.stages.train"):
        after = run_batch(folder, [first, third], "b.parquet")
    assert "2 groups, 1 already trained with these inputs (reused), 1 to train" in caplog.text
    assert model.stat().st_mtime_ns == written
    kept = after[after["group_key"] == group_key(first)].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        kept, before[before["group_key"] == group_key(first)].reset_index(drop=True)
    )
    assert set(after["group_key"]) == {group_key(first), group_key(third)}
    assert len(after) == 2 * (2 + 3) * 3  # seeds x tasks x splits
    loaded = load_checkpoint(model, [f"task_{i}" for i in range(9)])
    assert loaded.config["hidden_sizes"] == [4]
    # another setting (or other data or library code): every group is trained again
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="taskgroup.stages.train"):
        run_batch(folder, [first, third], "c.parquet", epochs=5)
    assert "0 already trained with these inputs (reused), 2 to train" in caplog.text
    assert model.stat().st_mtime_ns != written


def test_a_group_folder_without_its_fingerprint_is_trained_again(tables_on_disk, caplog):
    folder = tables_on_disk
    members = ["task_6", "task_7"]
    run_batch(folder, [members], "a.parquet")
    (folder / "models" / group_key(members) / "fingerprint.txt").unlink()
    with caplog.at_level(logging.INFO, logger="taskgroup.stages.train"):
        run_batch(folder, [members], "b.parquet")
    assert "0 already trained with these inputs (reused), 1 to train" in caplog.text
    pd.testing.assert_frame_equal(read_table(folder / "a.parquet", GROUP_RESULTS),
                                  read_table(folder / "b.parquet", GROUP_RESULTS))


def test_budget_epochs_give_every_model_the_steps_of_the_model_of_all_tasks():
    # 1000 rows of all tasks in batches of 64: 16 steps per epoch, 160 in 10 epochs
    assert budget_epochs(10, 64, 1000, 1000, "steps") == 10
    assert budget_epochs(10, 64, 100, 1000, "steps") == 80  # 2 steps per epoch
    assert budget_epochs(10, 64, 30, 1000, "steps") == 160  # 1 step per epoch
    assert budget_epochs(10, 64, 300, 1000, "steps") == 32  # 5 steps: 32 x 5 >= 160
    assert budget_epochs(10, 64, 30, 1000, "epochs") == 10
    with pytest.raises(ValueError, match="training budget 'time'"):
        budget_epochs(10, 64, 30, 1000, "time")
    with pytest.raises(ValueError, match="n_examples 0"):
        budget_epochs(10, 64, 0, 1000, "steps")


def test_models_with_their_own_epochs_equal_models_trained_alone_for_as_long(small_data):
    settings = TrainSettings(epochs=3, lr=0.01, batch_size=16, select_best_epoch=True)
    specs = [ModelSpec(torch.tensor([0]), 1, epochs=20), ModelSpec(torch.tensor([1, 2]), 2),
             ModelSpec(torch.tensor(list(range(9))), 3, epochs=5)]
    stacked = train_new_models(small_data, specs, [4], settings, CPU)
    for spec, (model, history) in zip(specs, stacked):
        epochs = spec.epochs or settings.epochs
        assert len(history) == epochs
        alone = train_new_model(small_data, spec.task_indices, [4],
                                replace(settings, epochs=epochs), spec.seed, CPU)
        for expected, found in zip(alone.state_dict().values(), model.state_dict().values()):
            torch.testing.assert_close(found, expected, atol=1e-5, rtol=0)


def test_the_steps_budget_trains_small_groups_for_more_epochs(tables_on_disk, caplog):
    folder = tables_on_disk
    groups = {group_key(m): m for m in (["task_0"], [f"task_{i}" for i in range(9)])}
    with caplog.at_level(logging.INFO, logger="taskgroup.stages.train"):
        train_group_models(
            folder / "examples.parquet", folder / "tasks.parquet", groups, folder / "r.parquet",
            folder / "models", [], [4],
            {"epochs": 2, "lr": 0.02, "batch_size": 32, "weight_decay": 0.0}, [0],
            selection={"fraction": 0.5, "seed": 0}, budget="steps", patience=None,
        )
    # 9 tasks x 60 rows: 17 steps per epoch; one task's 60 rows: 2 steps, so 17 epochs
    assert "training budget 'steps': 2 to 17 epochs per model" in caplog.text
