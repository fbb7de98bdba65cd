"""The real value of a subset: fine-tune the meta-initialization on it, measure each member."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import torch

from taskgroup.data.examples import TaskData
from taskgroup.models.network import MultiHeadNet
from taskgroup.models.training import TrainSettings, evaluate, fit
from taskgroup.seeding import derived_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneSettings:
    """How the estimator "finetune" trains each subset: ``training`` (epochs, lr, batch_size,
    weight_decay), and ``seed``, from which each subset's own seed is derived."""

    training: TrainSettings
    seed: int

    @classmethod
    def from_mapping(cls, section: Mapping) -> FinetuneSettings:
        """From the finetune config section (epochs, lr, batch_size, weight_decay, seed).
        Raises KeyError when a key is missing."""
        training = TrainSettings(
            section["epochs"], section["lr"], section["batch_size"], section["weight_decay"]
        )
        return cls(training, int(section["seed"]))


def finetuned_model(
    meta_model: MultiHeadNet, data: TaskData, task_indices: torch.Tensor,
    settings: FinetuneSettings, subset_id: int,
) -> MultiHeadNet:
    """A copy of ``meta_model`` trained on the training examples of the tasks
    ``task_indices`` with the seed derived from (settings.seed, subset_id), so a subset's
    model does not depend on which other subsets are fine-tuned with it."""
    model = copy.deepcopy(meta_model)
    fit(model, data, task_indices, settings.training, seed=derived_seed(settings.seed, subset_id))
    return model


def finetune_values(
    meta_model: MultiHeadNet,
    data: TaskData,
    subsets: pd.DataFrame,
    settings: FinetuneSettings,
    metric: str = "auto",
) -> pd.DataFrame:
    """f_i(S) for every subset S in ``subsets`` and every member i, by real fine-tuning.

    Each subset is fine-tuned by :func:`finetuned_model`, so a subset's value does not
    depend on which chunk it was computed in. Returns the subset_values table (see
    :mod:`taskgroup.data.tables`) with split "val", estimator "finetune"; its metric column
    holds ``metric`` (evaluation.metric, see :func:`taskgroup.models.training.evaluate`).
    """
    rows = []
    grouped = list(subsets.groupby("subset_id", sort=True)["task"])
    started = time.perf_counter()
    for done, (subset_id, members) in enumerate(grouped, start=1):
        indices = data.task_indices(members.tolist())
        model = finetuned_model(meta_model, data, indices, settings, int(subset_id))
        values = evaluate(model, data, indices, splits=("val",), metric=metric)
        values.insert(0, "subset_id", int(subset_id))
        rows.append(values)
        if done % 25 == 0 or done == len(grouped):
            elapsed = time.perf_counter() - started
            log.info(
                "fine-tuned %d/%d subsets in %.1f s (%.2f subsets/s)",
                done, len(grouped), elapsed, done / max(elapsed, 1e-9),
            )
    table = pd.concat(rows, ignore_index=True).drop(columns="n_examples")
    table["estimator"] = "finetune"
    return table.astype({"subset_id": "int64"})
