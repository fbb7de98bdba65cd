import logging

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, average_precision_score, r2_score, roc_auc_score
from torch.nn import functional as F

from taskgroup.models.metrics import check_metric, example_losses, per_task_metric, resolve_metrics


def ranking_example():
    rng = np.random.default_rng(0)
    task_index = np.repeat([0, 1, 2], [30, 25, 40])
    labels = (rng.random(task_index.size) < 0.3).astype(np.float32)
    labels[:2] = [0, 1]  # every task has both classes
    labels[30:32] = [0, 1]
    labels[55:57] = [0, 1]
    # two columns of scores; the second rounded to create ties
    scores = rng.standard_normal((task_index.size, 2))
    scores[:, 1] = np.round(scores[:, 1])
    return scores, labels, task_index


@pytest.mark.parametrize(
    "metric, reference",
    [("roc_auc", roc_auc_score), ("average_precision", average_precision_score)],
)
def test_ranking_metrics_equal_sklearn_per_task_with_ties(metric, reference):
    scores, labels, task_index = ranking_example()
    values = per_task_metric(scores, labels, task_index, [metric] * 3)
    assert values.shape == (3, 2)
    for task in range(3):
        rows = task_index == task
        for column in range(2):
            expected = reference(labels[rows], scores[rows, column])
            assert values[task, column] == pytest.approx(expected, abs=1e-12)


def test_accuracy_and_r2_equal_sklearn_and_mix_per_task():
    scores, labels, task_index = ranking_example()
    targets = labels + scores[:, 0] * 0.5  # task 2 is a regression task
    labels_mixed = np.where(task_index == 2, targets, labels)
    predictions = np.where(task_index == 2, targets + 0.3 * scores[:, 1], scores[:, 0])
    values = per_task_metric(
        torch.from_numpy(predictions), torch.from_numpy(labels_mixed),
        torch.from_numpy(task_index), ["accuracy", "roc_auc", "r2"],
    )[:, 0]
    for task, (metric, reference) in enumerate(
        [("accuracy", None), ("roc_auc", roc_auc_score), ("r2", r2_score)]
    ):
        rows = task_index == task
        if metric == "accuracy":
            expected = accuracy_score(labels_mixed[rows], predictions[rows] > 0)
        else:
            expected = reference(labels_mixed[rows], predictions[rows])
        assert values[task] == pytest.approx(expected, abs=1e-12)


def test_undefined_metrics_are_nan_with_a_warning(caplog):
    task_index = np.array([0, 0, 0, 1, 1, 1])
    labels = np.array([1.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    scores = np.array([0.1, 0.2, -0.3, 0.5, 0.7, -1.0])
    with caplog.at_level(logging.WARNING, logger="taskgroup.models.metrics"):
        values = per_task_metric(
            scores, labels, task_index, ["roc_auc", "roc_auc", "roc_auc"],
            ["only_ones", "fine", "empty"], context="split 'val'",
        )[:, 0]
    assert np.isnan(values[0]) and values[1] == pytest.approx(1.0) and np.isnan(values[2])
    assert "roc_auc of task 'only_ones' is undefined in split 'val'" in caplog.text
    assert "'empty'" not in caplog.text  # no examples: NaN without a warning
    constant = per_task_metric(scores[:3], np.full(3, 2.5), np.zeros(3, dtype=int), ["r2"])
    assert np.isnan(constant[0, 0])
    accuracy = per_task_metric(scores[:3], labels[:3], np.zeros(3, dtype=int), ["accuracy"])
    assert accuracy[0, 0] == pytest.approx(2 / 3)  # one class is fine for accuracy


def test_example_losses_pick_the_loss_by_task_type():
    outputs = torch.tensor([0.3, -1.2, 2.0, 0.5])
    labels = torch.tensor([1.0, 0.0, 1.5, -0.5])
    regression = torch.tensor([False, False, True, True])
    losses = example_losses(outputs, labels, regression)
    bce = F.binary_cross_entropy_with_logits(outputs[:2], labels[:2], reduction="none")
    torch.testing.assert_close(losses[:2], bce)
    torch.testing.assert_close(losses[2:], torch.tensor([0.25, 1.0]))
    torch.testing.assert_close(example_losses(outputs[:2], labels[:2], None), bce)


def test_metric_and_task_type_mismatch_names_the_key_and_the_task():
    check_metric("auto", {"a": "binary", "b": "regression"})
    check_metric("roc_auc", ["binary", "binary"])
    with pytest.raises(ValueError, match=r"evaluation.metric = 'r2' .* task 'a' is a binary"):
        check_metric("r2", {"a": "binary", "b": "regression"})
    with pytest.raises(
        ValueError, match=r"evaluation.metric = 'average_precision' .* task 'b' is a regression"
    ):
        check_metric("average_precision", {"a": "binary", "b": "regression"})
    with pytest.raises(ValueError, match=r"evaluation.metric = 'f1'; expected one of"):
        check_metric("f1", {"a": "binary"})
    with pytest.raises(ValueError, match=r"task_type of task 'c' is 'multiclass'"):
        check_metric("auto", {"c": "multiclass"})
    assert resolve_metrics("auto", ["binary", "regression"], ["a", "b"]) == ["accuracy", "r2"]
    assert resolve_metrics("roc_auc", ["binary"], ["a"]) == ["roc_auc"]


def test_config_schema_knows_evaluation_metric():
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    root = Path(__file__).resolve().parents[1]
    schema = str(root / "config" / "config.schema.yaml")
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    assert config["evaluation"]["metric"] == "auto"
    del config["evaluation"]["metric"]
    validate(config, schema)
    assert config["evaluation"]["metric"] == "auto"  # the default
    config["evaluation"]["metric"] = "f1"
    with pytest.raises(Exception, match="'f1' is not one of"):
        validate(config, schema)


def test_average_ranks_match_scipy_rankdata_with_ties():
    from scipy.stats import rankdata

    from taskgroup.models.metrics import average_ranks

    rng = np.random.default_rng(0)
    values = rng.integers(0, 5, size=(40, 3)).astype(float)  # many ties
    np.testing.assert_array_equal(average_ranks(values), rankdata(values, axis=0))
    np.testing.assert_array_equal(average_ranks(values[:, 0]), rankdata(values[:, 0]))
    assert average_ranks(np.array([1.0, 2.0, 2.0, 3.0])).tolist() == [1.0, 2.5, 2.5, 4.0]
