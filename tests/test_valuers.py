"""The estimator "finetune" as a valuer, and the settings it is built from."""

import pandas as pd
import torch

from taskgroup.estimate.finetune import FinetuneSettings, finetune_values, finetuned_model
from taskgroup.estimate.valuers import finetune_valuer
from taskgroup.models.network import MultiHeadNet
from taskgroup.models.training import TrainSettings, evaluate


def test_finetune_settings_from_the_config_section():
    section = {"batch_size": 16, "epochs": 2, "lr": 0.01, "seed": 3, "weight_decay": 0.001}
    settings = FinetuneSettings.from_mapping(section)
    assert settings == FinetuneSettings(TrainSettings(2, 0.01, 16, 0.001), seed=3)


def test_finetune_valuer_values_each_subset_with_its_own_finetuned_model(small_data):
    torch.manual_seed(0)
    meta = MultiHeadNet(small_data.n_features, small_data.n_tasks, [3])
    settings = FinetuneSettings(TrainSettings(epochs=2, lr=0.01, batch_size=16), seed=5)
    subsets = pd.DataFrame({"subset_id": [4, 4, 9], "task": ["task_0", "task_3", "task_7"]})
    values = finetune_valuer(meta, small_data, settings, "auto")(subsets)
    pd.testing.assert_frame_equal(values, finetune_values(meta, small_data, subsets, settings))
    for subset_id, members in subsets.groupby("subset_id")["task"]:
        indices = small_data.task_indices(members.tolist())
        model = finetuned_model(meta, small_data, indices, settings, subset_id)
        expected = evaluate(model, small_data, indices, splits=("val",))
        mine = values[values["subset_id"] == subset_id].reset_index(drop=True)
        pd.testing.assert_series_equal(mine["loss"], expected["loss"])
        assert mine["task"].tolist() == expected["task"].tolist()
