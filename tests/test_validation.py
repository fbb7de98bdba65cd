import copy

import numpy as np
import pandas as pd
import pytest
import torch

from taskgroup.estimate.validity import first_order_validity
from taskgroup.models.network import MultiHeadNet
from taskgroup.models.training import TrainSettings, fit
from taskgroup.report.validation import per_task_relative_error, within_task_spearman


def values(losses):
    rows = [(s, t, loss) for (s, t), loss in losses.items()]
    table = pd.DataFrame(rows, columns=["subset_id", "task", "loss"])
    table["split"], table["metric"], table["estimator"] = "val", 0.5, "x"
    return table


def test_relative_error_and_spearman_by_hand():
    reference = values({(0, "a"): 1.0, (1, "a"): 2.0, (2, "a"): 4.0, (0, "b"): 2.0})
    estimate = values({(0, "a"): 1.1, (1, "a"): 1.9, (2, "a"): 5.0, (0, "b"): 2.0})
    errors = per_task_relative_error(estimate, reference).set_index(["subset_id", "task"])
    assert errors.loc[(0, "a"), "relative_error"] == pytest.approx(0.1)
    assert errors.loc[(2, "a"), "relative_error"] == pytest.approx(0.25)
    spearman = within_task_spearman(estimate, reference, pd.Series({"a": 0.0, "b": 0.0}))
    assert spearman["a"] == pytest.approx(1.0) and np.isnan(spearman["b"])


def test_first_order_expansion_is_exact_at_zero_and_close_for_small_shifts(small_data):
    torch.manual_seed(0)
    meta = MultiHeadNet(small_data.n_features, small_data.n_tasks, [3])
    tasks = torch.tensor([0, 1])
    tuned = copy.deepcopy(meta)
    fit(tuned, small_data, tasks, TrainSettings(epochs=2, lr=0.01, batch_size=16), seed=0)
    curve = first_order_validity(meta, tuned, small_data, tasks, [0.0, 0.1, 1.0], 7)
    assert set(curve["task"]) == {"task_0", "task_1"} and (curve["subset_id"] == 7).all()
    by_scale = curve.groupby("scale")["relative_error"].max()
    assert by_scale[0.0] == pytest.approx(0.0, abs=1e-6)
    assert by_scale[0.1] < 1e-3 and by_scale[0.1] < by_scale[1.0]
    shifts = curve.groupby("scale")["relative_shift"].first()
    assert shifts[1.0] == pytest.approx(10 * shifts[0.1])
