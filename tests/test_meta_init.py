import logging

from conftest import small_spec

from taskgroup.data.datasets.planted import generate_planted
from taskgroup.data.tables import read_table, write_table
from taskgroup.stages.meta_init import train_meta_init

METRICS = {"task": "str", "split": "str", "loss": "float"}


def test_the_meta_initialization_keeps_its_best_epoch(tmp_path, caplog):
    """A wide trunk trained long at a high rate over-fits the few training rows: the kept
    best epoch has a lower mean validation loss than the last one, and the log names it."""
    examples, tasks = generate_planted(small_spec(tasks_per_group=2))
    write_table(examples, tmp_path / "examples.parquet")
    write_table(tasks, tmp_path / "tasks.parquet")
    training = {"epochs": 60, "lr": 0.05, "batch_size": 16, "weight_decay": 0.0}
    losses = {}
    for keep in (False, True):
        metrics = tmp_path / f"metrics_{keep}.parquet"
        with caplog.at_level(logging.INFO, logger="taskgroup.stages.meta_init"):
            train_meta_init(
                tmp_path / "examples.parquet", tmp_path / "tasks.parquet",
                tmp_path / f"model_{keep}.pt", metrics, [64, 64], training, seed=0,
                keep_best_epoch=keep,
            )
        losses[keep] = read_table(metrics, METRICS)["loss"].mean()
    assert losses[True] < 0.9 * losses[False]
    messages = [r.getMessage() for r in caplog.records]
    assert any("the last kept" in m for m in messages)
    kept = [m for m in messages if "kept (lowest mean val loss)" in m]
    assert len(kept) == 1 and "epoch 60 kept" not in kept[0]
