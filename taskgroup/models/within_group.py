"""Training within a group with the config's ``training_options``: SVD task reweighting
(:mod:`taskgroup.models.reweighting`), covariance alignment (:mod:`taskgroup.models.alignment`) and
transfer diagnostics (:mod:`taskgroup.models.diagnostics`). All are off by default; with all off,
:func:`train_with_options` is exactly :func:`taskgroup.models.training.train_new_model`.

Config (``training_options.<stage>``, stage ``meta_init`` or ``final``; alignment only for
``final``)::

    reweighting: {enabled: false, rank: 1}
    alignment: {enabled: false, epochs: 20, lr: 0.001, head_lr: null}
    diagnostics: {enabled: false, every: 10}
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from taskgroup.data.examples import TaskData
from taskgroup.models import reweighting
from taskgroup.models.alignment import AlignmentSettings, train_alignment
from taskgroup.models.diagnostics import DiagnosticsRecorder
from taskgroup.models.network import AlignedNet
from taskgroup.models.options import (  # noqa: F401  (re-exported)
    Alignment,
    Diagnostics,
    Reweighting,
    TrainingOptions,
    enabled_options,
)
from taskgroup.models.training import TrainSettings, train_new_model
from taskgroup.seeding import derived_seed


@dataclass
class TrainedModel:
    """A trained network (a MultiHeadNet, or an AlignedNet with alignment) and the tables of
    the options: task weights (reweighting) and diagnostics, None when off; ``loss_rose_far``:
    the joint training's loss ended far above its start
    (:attr:`taskgroup.models.training.LossHistory.rose_far`); ``kept_epoch``: the joint
    training's epoch kept by the best-epoch selection (None without it)."""

    model: torch.nn.Module
    weights: pd.DataFrame | None
    diagnostics: pd.DataFrame | None
    loss_rose_far: bool = False
    kept_epoch: int | None = None


def train_with_options(
    data: TaskData, task_indices: torch.Tensor, hidden_sizes: list[int],
    settings: TrainSettings, seed: int, device: torch.device, options: TrainingOptions,
    weights: pd.DataFrame | None = None,
) -> TrainedModel:
    """A freshly initialized network trained on ``task_indices`` like
    :func:`train_new_model`, with the enabled ``options``: the loss weighted by the tasks'
    SVD weights (``weights``, a precomputed task-weights table, or computed here), then the
    alignment phase, with diagnostics recorded throughout."""
    if options.reweighting.enabled and weights is None:
        weights = reweighting.task_weights(data, task_indices, options.reweighting.rank)
    if not options.reweighting.enabled:
        weights = None
    weight_vector = None if weights is None else reweighting.weight_vector(weights, data, device)
    alignment = options.alignment
    recorder = None
    if options.diagnostics.enabled:
        recorder = DiagnosticsRecorder(
            data, task_indices, options.diagnostics.every, settings.epochs,
            alignment.epochs if alignment.enabled else 0, settings.select_best_epoch,
        )
    histories = []
    model = train_new_model(
        data, task_indices, hidden_sizes, settings, seed, device,
        task_weights=weight_vector,
        after_epoch=None if recorder is None else recorder.joint,
        before_training=None if recorder is None else recorder.record_start,
        after_training=histories.append,
    )
    kept_alignment_epoch = 0
    if alignment.enabled:
        model = AlignedNet(model)
        _, kept_alignment_epoch = train_alignment(
            model, data, task_indices,
            AlignmentSettings(
                alignment.epochs, alignment.lr,
                settings.lr if alignment.head_lr is None else alignment.head_lr,
            ),
            settings.batch_size, derived_seed(seed, "alignment"), settings.weight_decay,
            settings.select_best_epoch, weight_vector,
            None if recorder is None else recorder.alignment,
        )
    if recorder is not None:
        recorder.record_final(model, kept_alignment_epoch)
    return TrainedModel(
        model, weights, None if recorder is None else recorder.table(),
        loss_rose_far=histories[0].rose_far, kept_epoch=histories[0].kept_epoch,
    )
