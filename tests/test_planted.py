import numpy as np
import pandas as pd
import pytest
from conftest import small_spec

from taskgroup.data.datasets.planted import generate_planted
from taskgroup.data.tables import EXAMPLES, TASKS, check_columns, feature_columns


def test_tables_follow_their_schemas_and_sizes():
    examples, tasks = generate_planted(small_spec())
    check_columns(examples, EXAMPLES, "examples")
    check_columns(tasks, TASKS, "tasks")
    assert len(feature_columns(examples)) == 6
    assert tasks["task"].tolist() == [f"task_{i}" for i in range(9)]
    assert tasks["planted_group"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    counts = examples.groupby(["task", "split"]).size().unstack()
    assert (counts["train"] == 60).all() and (counts["val"] == 40).all()
    assert (counts["test"] == 50).all()
    assert set(examples["label"].unique()) == {0.0, 1.0}


def test_same_seed_same_tables_other_seed_other_tables():
    first, _ = generate_planted(small_spec(seed=3))
    again, _ = generate_planted(small_spec(seed=3))
    other, _ = generate_planted(small_spec(seed=4))
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first["feature_000"], other["feature_000"])


def test_groups_share_covariance_and_labels_are_balanced():
    examples, tasks = generate_planted(small_spec(n_train=2000, n_features=4))
    features = feature_columns(examples)
    covariances = {
        task: np.cov(frame[features].to_numpy(), rowvar=False)
        for task, frame in examples[examples["split"] == "train"].groupby("task")
    }

    def distance(a, b):
        return np.linalg.norm(covariances[a] - covariances[b]) / np.linalg.norm(covariances[a])

    assert distance("task_0", "task_1") < 0.15  # same group: same covariance up to sampling
    assert distance("task_0", "task_3") > 0.4  # different groups: different covariances
    balance = examples.groupby("task")["label"].mean()
    assert balance.between(0.3, 0.7).all()


def test_label_noise_flips_the_configured_share_of_labels():
    clean, _ = generate_planted(small_spec(n_train=3000, label_noise=0.0))
    noisy, _ = generate_planted(small_spec(n_train=3000, label_noise=0.2))
    flipped = (clean["label"] != noisy["label"]).mean()
    assert abs(flipped - 0.2) < 0.02


def test_train_imbalance_spreads_task_sizes():
    _, tasks = generate_planted(small_spec(n_train=400, train_imbalance=4.0))
    assert tasks["n_train"].max() <= 400
    assert tasks["n_train"].min() >= 100
    assert tasks["n_train"].max() / tasks["n_train"].min() > 1.5


def test_unequal_groups_and_one_noisy_group():
    examples, tasks = generate_planted(
        small_spec(tasks_per_group=[2, 3, 4], label_noise=[0.0, 0.0, 0.3], n_train=2000)
    )
    assert tasks["planted_group"].tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2]
    clean, _ = generate_planted(
        small_spec(tasks_per_group=[2, 3, 4], label_noise=0.0, n_train=2000)
    )
    flipped = (clean["label"] != examples["label"]).groupby(examples["task"]).mean()
    group = tasks.set_index("task")["planted_group"]
    assert flipped[group[flipped.index] < 2].max() == 0.0
    assert abs(flipped[group[flipped.index] == 2].mean() - 0.3) < 0.02


def test_per_group_lists_must_match_the_number_of_groups():
    with pytest.raises(ValueError, match=r"dataset.planted.label_noise lists 2 values"):
        small_spec(label_noise=[0.1, 0.2])
