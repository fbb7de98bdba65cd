"""Training within a group with the config's ``training_options``: SVD task reweighting
(:mod:`taskgroup.reweighting`), covariance alignment (:mod:`taskgroup.alignment`) and
transfer diagnostics (:mod:`taskgroup.diagnostics`). All are off by default; with all off,
:func:`train_with_options` is exactly :func:`taskgroup.train.train_new_model`.

Config (``training_options.<stage>``, stage ``meta_init`` or ``final``; alignment only for
``final``)::

    reweighting: {enabled: false, rank: 1}
    alignment: {enabled: false, epochs: 20, lr: 0.001, head_lr: null}
    diagnostics: {enabled: false, every: 10}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd
import torch

from taskgroup import reweighting
from taskgroup.alignment import AlignedNet, AlignmentSettings, train_alignment
from taskgroup.data import TaskData
from taskgroup.diagnostics import DiagnosticsRecorder
from taskgroup.train import TrainSettings, derived_seed, train_new_model


@dataclass(frozen=True)
class Reweighting:
    enabled: bool = False
    rank: int = 1


@dataclass(frozen=True)
class Alignment:
    enabled: bool = False
    epochs: int = 20
    lr: float = 0.001
    head_lr: float | None = None  # None = the training's lr


@dataclass(frozen=True)
class Diagnostics:
    enabled: bool = False
    every: int = 10


@dataclass(frozen=True)
class TrainingOptions:
    reweighting: Reweighting = field(default_factory=Reweighting)
    alignment: Alignment = field(default_factory=Alignment)
    diagnostics: Diagnostics = field(default_factory=Diagnostics)

    @classmethod
    def from_dict(cls, options: dict | None) -> "TrainingOptions":
        """From a (possibly partial or empty) ``training_options.<stage>`` section."""
        options = options or {}
        unknown = sorted(set(options) - {"reweighting", "alignment", "diagnostics"})
        if unknown:
            raise ValueError(f"training_options: unknown option(s) {unknown}")
        return cls(
            Reweighting(**options.get("reweighting", {})),
            Alignment(**options.get("alignment", {})),
            Diagnostics(**options.get("diagnostics", {})),
        )

    @property
    def any_enabled(self) -> bool:
        return self.reweighting.enabled or self.alignment.enabled or self.diagnostics.enabled


_CLASSES = {"reweighting": Reweighting, "alignment": Alignment, "diagnostics": Diagnostics}


def enabled_options(options: dict | None) -> dict:
    """Only the enabled options of a ``training_options.<stage>`` section, each with its
    defaults filled in and keys sorted (what the rules pass as params:, so that disabled
    options leave the jobs unchanged and an omitted default equals the written value)."""
    options = options or {}
    enabled = {}
    for name in sorted(options):
        if name not in _CLASSES:
            raise ValueError(f"training_options: unknown option {name!r}")
        if options[name].get("enabled", False):
            full = {**asdict(_CLASSES[name]()), **options[name]}
            enabled[name] = {key: full[key] for key in sorted(full)}
    return enabled


@dataclass
class TrainedModel:
    """A trained network (a MultiHeadNet, or an AlignedNet with alignment) and the tables of
    the options: task weights (reweighting) and diagnostics, None when off."""

    model: torch.nn.Module
    weights: pd.DataFrame | None
    diagnostics: pd.DataFrame | None


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
    model = train_new_model(
        data, task_indices, hidden_sizes, settings, seed, device,
        task_weights=weight_vector,
        after_epoch=None if recorder is None else recorder.joint,
        before_training=None if recorder is None else recorder.record_start,
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
    return TrainedModel(model, weights, None if recorder is None else recorder.table())
