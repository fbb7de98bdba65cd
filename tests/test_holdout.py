"""The cut of the validation rows into early stopping's part and the recommendation's part."""

import numpy as np
import pytest
import torch

from taskgroup.data.examples import SplitTensors, TaskData
from taskgroup.data.tables import GROUP_RESULTS, read_table, write_table
from taskgroup.group.groupings import group_key
from taskgroup.models.holdout import (
    SELECTION_SPLIT,
    SelectionSplit,
    hold_out_selection_rows,
    selection_mask,
)
from taskgroup.stages.train import train_group_models


def test_the_cut_is_seeded_stratified_and_disjoint(small_data):
    settings = SelectionSplit(fraction=0.5, seed=3)
    val = small_data.splits["val"]
    first = selection_mask(small_data.task_names, small_data.types, val, settings)
    again = selection_mask(small_data.task_names, small_data.types, val, settings)
    other = selection_mask(small_data.task_names, small_data.types, val,
                           SelectionSplit(fraction=0.5, seed=4))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    labels, tasks = val.labels.numpy(), val.task_index.numpy()
    for task in range(small_data.n_tasks):
        for label in (0.0, 1.0):
            rows = (tasks == task) & (labels == label)
            # each class is halved (m - round(m / 2), Python's round: halves to even)
            assert first[rows].sum() == rows.sum() - round(rows.sum() / 2)
    cut = hold_out_selection_rows(small_data, settings)
    assert len(cut.splits["val"].labels) + len(cut.splits[SELECTION_SPLIT].labels) == len(labels)
    # disjoint and covering: the parts are the masked rows, in their order
    assert torch.equal(cut.splits[SELECTION_SPLIT].features, val.features[torch.from_numpy(first)])
    assert torch.equal(cut.splits["val"].features, val.features[torch.from_numpy(~first)])
    assert torch.equal(cut.splits["train"].features, small_data.splits["train"].features)
    assert torch.equal(cut.splits["test"].labels, small_data.splits["test"].labels)


def test_a_task_is_cut_the_same_whatever_the_other_tasks():
    def data(names, sizes):
        rng = np.random.default_rng(0)
        index = np.concatenate([[i] * n for i, n in enumerate(sizes)])
        labels = np.concatenate([np.arange(n) % 2 for n in sizes]).astype(float)
        split = SplitTensors(torch.from_numpy(rng.standard_normal((len(index), 2)).astype("f4")),
                             torch.from_numpy(labels.astype("f4")), torch.from_numpy(index))
        return TaskData(names, {"train": split, "val": split, "test": split})

    settings = SelectionSplit(fraction=0.3, seed=0)
    alone = data(["x"], [10])
    together = data(["w", "x"], [7, 10])
    mask_alone = selection_mask(alone.task_names, alone.types, alone.splits["val"], settings)
    mask_together = selection_mask(together.task_names, together.types,
                                   together.splits["val"], settings)
    assert np.array_equal(mask_alone, mask_together[7:])
    assert mask_alone.sum() == 10 - 2 * round(0.7 * 5)  # 5 rows per class, 4 of them stop


def test_regression_tasks_are_cut_in_one_stratum_and_bad_fractions_are_refused():
    index = torch.zeros(9, dtype=torch.int64)
    split = SplitTensors(torch.zeros(9, 1), torch.arange(9.0), index)
    mask = selection_mask(["r"], ["regression"], split, SelectionSplit(fraction=0.5, seed=0))
    assert mask.sum() == 9 - round(4.5)
    with pytest.raises(ValueError, match="selection_fraction is 1.0"):
        selection_mask(["r"], ["regression"], split, SelectionSplit(fraction=1.0, seed=0))


def test_group_results_report_the_stopping_and_selection_rows(small_tables, tmp_path):
    examples, tasks = small_tables
    write_table(examples, tmp_path / "examples.parquet")
    write_table(tasks, tmp_path / "tasks.parquet")
    members = ["task_0", "task_3"]
    train_group_models(
        tmp_path / "examples.parquet", tmp_path / "tasks.parquet", {group_key(members): members},
        tmp_path / "results.parquet", tmp_path / "models", [], [4],
        {"epochs": 3, "lr": 0.02, "batch_size": 32, "weight_decay": 0.0}, [0],
        selection={"fraction": 0.25, "seed": 0}, budget="epochs", patience=None,
    )
    results = read_table(tmp_path / "results.parquet", GROUP_RESULTS)
    assert list(results.columns) == list(GROUP_RESULTS)
    counts = results.set_index(["task", "split"])["n_examples"]
    val = examples[(examples["split"] == "val") & examples["task"].isin(members)]
    for task in members:
        rows = val[val["task"] == task]
        held = sum(len(c) - round(0.75 * len(c)) for _, c in rows.groupby("label"))
        assert counts[(task, "val_select")] == held
        assert counts[(task, "val_stop")] == len(rows) - held
        assert counts[(task, "test")] == int((examples.query("split == 'test'")["task"]
                                              == task).sum())
