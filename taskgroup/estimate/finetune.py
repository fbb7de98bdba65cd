"""The real value of a subset: fine-tune the meta-initialization on it, measure each member."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

import pandas as pd
import torch

from taskgroup.data.examples import TaskData
from taskgroup.estimate.settings import AUTO, auto_or_float, positive_or_auto
from taskgroup.models.metrics import resolve_metrics
from taskgroup.models.network import MultiHeadNet
from taskgroup.models.stacked import ModelSpec, fit_models
from taskgroup.models.training import TrainSettings, fit, task_values
from taskgroup.seeding import derived_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneSettings:
    """How the estimator "finetune" trains each subset: ``training`` (epochs, lr, batch_size,
    weight_decay), and ``seed``, from which each subset's own seed is derived.

    ``training.lr`` may be "auto" (:data:`taskgroup.estimate.settings.AUTO`): the rate is
    then chosen among ``lr_candidates`` on held-out subsets
    (:func:`taskgroup.stages.validate.calibrate_finetune`), and nothing is fine-tuned
    until it is replaced by the chosen rate (:meth:`with_lr`)."""

    training: TrainSettings
    seed: int
    lr_candidates: tuple[float, ...] = ()

    def __post_init__(self):
        lr = self.training.lr
        if not positive_or_auto(lr):
            raise ValueError(f"finetune.lr = {lr!r}; expected a positive number or {AUTO!r}")
        if any(not float(c) > 0 for c in self.lr_candidates):
            raise ValueError(
                f"finetune.lr_candidates = {list(self.lr_candidates)}; expected positive numbers"
            )

    @classmethod
    def from_mapping(cls, section: Mapping) -> FinetuneSettings:
        """From the finetune config section (epochs, lr, batch_size, weight_decay, seed, and
        optionally lr_candidates). Raises KeyError when a key is missing and ValueError for
        an lr that is neither positive nor "auto"."""
        training = TrainSettings(
            section["epochs"], auto_or_float(section["lr"]), section["batch_size"],
            section["weight_decay"],
        )
        candidates = tuple(float(c) for c in section.get("lr_candidates", ()))
        return cls(training, int(section["seed"]), candidates)

    @property
    def lr_is_auto(self) -> bool:
        """Whether the learning rate is still to be chosen ("auto")."""
        return isinstance(self.training.lr, str)

    def with_lr(self, lr: float) -> FinetuneSettings:
        """These settings with the learning rate ``lr`` (a positive number)."""
        return replace(self, training=replace(self.training, lr=float(lr)))

    def require_lr(self) -> None:
        """Raise ValueError when the learning rate is still "auto" (nothing can be
        fine-tuned before the rate is chosen)."""
        if self.lr_is_auto:
            raise ValueError(
                'finetune.lr is "auto": replace it with the rate chosen on the held-out '
                "subsets (the lr curve table, taskgroup.stages.finetune.with_chosen_lr) "
                "before fine-tuning"
            )


def finetuned_model(
    meta_model: MultiHeadNet, data: TaskData, task_indices: torch.Tensor,
    settings: FinetuneSettings, subset_id: int,
) -> MultiHeadNet:
    """A copy of ``meta_model`` trained on the training examples of the tasks
    ``task_indices`` with the seed derived from (settings.seed, subset_id), so a subset's
    model does not depend on which other subsets are fine-tuned with it."""
    settings.require_lr()
    model = copy.deepcopy(meta_model)
    fit(model, data, task_indices, settings.training, seed=derived_seed(settings.seed, subset_id))
    return model


def finetuned_models(
    meta_model: MultiHeadNet, data: TaskData, subsets: pd.DataFrame,
    settings: FinetuneSettings,
) -> list[tuple[int, torch.Tensor, MultiHeadNet]]:
    """(subset_id, member task indices, fine-tuned model) for every subset of ``subsets``
    (long format: subset_id, task), in subset_id order: each model what
    :func:`finetuned_model` gives (up to float rounding), all trained together
    (:func:`taskgroup.models.stacked.fit_models`)."""
    settings.require_lr()
    grouped = list(subsets.groupby("subset_id", sort=True)["task"])
    device = next(meta_model.parameters()).device
    indices = [data.task_indices(members.tolist()).to(device) for _, members in grouped]
    specs = [
        ModelSpec(members, derived_seed(settings.seed, int(subset_id)))
        for (subset_id, _), members in zip(grouped, indices)
    ]
    started = time.perf_counter()
    models = [copy.deepcopy(meta_model) for _ in grouped]
    fit_models(models, data, specs, settings.training, device)
    elapsed = time.perf_counter() - started
    log.info("fine-tuned %d subsets in %.1f s (%.2f subsets/s)", len(grouped), elapsed,
             len(grouped) / max(elapsed, 1e-9))
    return [
        (int(subset_id), members, model)
        for (subset_id, _), members, model in zip(grouped, indices, models)
    ]


def values_of_models(
    finetuned: list[tuple[int, torch.Tensor, MultiHeadNet]], data: TaskData,
    metric: str = "auto",
) -> pd.DataFrame:
    """The subset_values table (split "val", estimator "finetune"; see
    :mod:`taskgroup.data.tables`) of :func:`finetuned_models`' models: each member's
    validation loss and ``metric`` (evaluation.metric), from each model's outputs on its
    members' validation examples only."""
    metrics = resolve_metrics(metric, data.types, data.task_names)
    # Each model sees its members' examples only, and the rows become one table at the
    # end: passes over every task's examples, with a small table kept per model between
    # them, left their freed activations in the C heap (the RSS grew by about a pass's
    # activations per model: gigabytes for a chunk of [256, 256] models).
    rows = []
    for subset_id, members, model in finetuned:
        model.eval()
        rows += [{"subset_id": subset_id, **row}
                 for row in task_values(model, data, members, "val", metrics)]
    table = pd.DataFrame(rows).drop(columns="n_examples")
    table["estimator"] = "finetune"
    return table.astype({"subset_id": "int64"})


def finetune_values(
    meta_model: MultiHeadNet,
    data: TaskData,
    subsets: pd.DataFrame,
    settings: FinetuneSettings,
    metric: str = "auto",
) -> pd.DataFrame:
    """f_i(S) for every subset S in ``subsets`` and every member i, by real fine-tuning.

    Each subset is fine-tuned as by :func:`finetuned_model` (all of them together, see
    :func:`finetuned_models`), so a subset's value does not depend on which chunk it was
    computed in. Returns the subset_values table (see :mod:`taskgroup.data.tables`) with
    split "val", estimator "finetune"; its metric column holds ``metric``
    (evaluation.metric, see :func:`taskgroup.models.training.evaluate`).
    """
    return values_of_models(finetuned_models(meta_model, data, subsets, settings), data, metric)
