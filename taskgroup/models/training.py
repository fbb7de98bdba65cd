"""Training and evaluation of a multi-head network on a set of tasks."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from taskgroup.data.examples import SplitTensors, TaskData
from taskgroup.models.metrics import example_losses, per_task_metric, resolve_metrics
from taskgroup.models.network import MultiHeadNet

log = logging.getLogger(__name__)

# A training whose last epoch's mean training loss exceeds both this multiple of its loss at
# the start (the first minibatch, before any step) and that loss + 1 is logged as diverging:
# a sound training lowers its training loss, and the sum keeps a start near 0 from warning.
DIVERGENCE_FACTOR = 10.0


class TrainingDivergedError(ValueError):
    """The training loss became NaN or infinite (a learning rate far too large, mostly)."""


def loss_rose_far(start: float, last: float) -> bool:
    """Whether a training whose loss was ``start`` at its first minibatch (before any step)
    ended far above it: ``last`` (the last epoch's mean training loss) exceeds both
    :data:`DIVERGENCE_FACTOR` times ``start`` and ``start`` + 1."""
    return last > max(DIVERGENCE_FACTOR * start, start + 1)


class LossHistory(list):
    """The mean training loss of each epoch (a list of floats), with ``start``: the loss of
    the first minibatch at the initial parameters (None before any step), and
    ``kept_epoch``: the epoch (from 1) whose parameters the best-epoch selection kept (None
    without it)."""

    def __init__(self, losses=(), start: float | None = None):
        super().__init__(losses)
        self.start = start
        self.kept_epoch: int | None = None

    @property
    def rose_far(self) -> bool:
        """The last epoch ended far above the start (:func:`loss_rose_far`): the training
        may have diverged without its loss becoming infinite."""
        return bool(self) and self.start is not None and loss_rose_far(self.start, self[-1])


@dataclass(frozen=True)
class TrainSettings:
    """How to train: Adam with learning rate ``lr`` for ``epochs`` passes over the training
    examples in shuffled minibatches of ``batch_size``; ``weight_decay`` is L2 on all
    parameters. With ``select_best_epoch`` the parameters after the epoch with the lowest
    validation loss (averaged over the trained tasks) are kept (early stopping); with it and
    a ``patience`` (epochs), the training also stops once ``patience`` epochs in a row
    brought no lower validation loss (None: it takes all its epochs)."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    select_best_epoch: bool = False
    patience: int | None = None


TRAINING_BUDGETS = ("steps", "epochs")


def budget_epochs(
    epochs: int, batch_size: int, n_examples: int, n_examples_all: int, budget: str
) -> int:
    """Epochs for a model trained on ``n_examples`` training examples, so that models of
    groups of different sizes are compared at a fair budget.

    ``budget`` "epochs": ``epochs`` passes over its own examples, whatever their number (a
    one-task model then takes a small share of the steps of a model of every task).
    "steps": the least number of passes over its own examples that takes at least the
    optimizer steps of ``epochs`` passes over ``n_examples_all`` examples (every task's: the
    one-group model's), in minibatches of ``batch_size``.

    Raises ValueError for another budget or a count below 1."""
    if budget not in TRAINING_BUDGETS:
        raise ValueError(f"training budget {budget!r}: expected one of {TRAINING_BUDGETS}")
    if min(epochs, batch_size, n_examples, n_examples_all) < 1:
        raise ValueError(
            f"epochs {epochs}, batch_size {batch_size}, n_examples {n_examples} and "
            f"n_examples_all {n_examples_all} must all be at least 1"
        )
    if budget == "epochs":
        return epochs
    steps = epochs * -(-n_examples_all // batch_size)
    return -(-steps // -(-n_examples // batch_size))


def patience_epochs(fraction: float | None, epochs: int) -> int | None:
    """The patience in epochs of a model given ``epochs`` epochs: ``fraction`` of them,
    rounded up (at least 1); None (no early stop) for a None ``fraction``. A share of its
    own epochs, so that under the steps budget a small group's model, whose epochs are a few
    steps each, waits as many optimizer steps as the model of all tasks.

    Raises ValueError for a fraction outside (0, 1] or epochs below 1."""
    if fraction is None:
        return None
    if not 0 < fraction <= 1 or epochs < 1:
        raise ValueError(
            f"patience fraction {fraction} (expected in (0, 1]) and epochs {epochs} "
            "(expected >= 1)"
        )
    return max(1, math.ceil(fraction * epochs))


def per_task_losses(
    model: MultiHeadNet, split: SplitTensors, n_tasks: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean loss, example count and outputs: loss (n_tasks,) per task (binary cross-entropy
    in nats for binary tasks, mean squared error in label units squared for regression
    tasks, see :mod:`taskgroup.models.metrics`), counts (n_tasks,), and the outputs (n,) of the
    split's examples (logits or predictions).

    Tasks without examples in ``split`` get NaN loss."""
    with torch.no_grad():
        outputs = model(split.features, split.task_index)
        losses = example_losses(outputs, split.labels, split.regression)
        counts = torch.bincount(split.task_index, minlength=n_tasks).float()
        loss_sum = torch.zeros(n_tasks, device=outputs.device).index_add_(
            0, split.task_index, losses
        )
    nan = torch.full_like(counts, float("nan"))
    return torch.where(counts > 0, loss_sum / counts.clamp(min=1), nan), counts, outputs


def fit(
    model: MultiHeadNet,
    data: TaskData,
    task_indices: torch.Tensor,
    settings: TrainSettings,
    seed: int,
    before_step: Callable[[int, MultiHeadNet, SplitTensors], None] | None = None,
    task_weights: torch.Tensor | None = None,
    after_epoch: Callable[[int, MultiHeadNet], None] | None = None,
) -> LossHistory:
    """Train ``model`` in place on the training examples of ``task_indices``.

    Returns the mean training loss of each epoch, with the loss at the start
    (:class:`LossHistory`). ``data`` must be on the model's device.
    ``before_step(step, model, minibatch)``, if given, is called before every optimizer step
    (step counts from 0 over the whole run); it must not change the model or draw random
    numbers, so training is the same with or without it (e.g. TAG's lookahead).

    ``task_weights`` (n_tasks,), if given, weights each example's loss by its task's weight:
    the minibatch loss is (1 / |B|) sum_{x in B} w_task(x) loss(x) (the returned history is
    that weighted loss; the best-epoch selection still uses the unweighted mean validation
    loss). ``after_epoch(epoch, model)``, if given, is called after every epoch's steps
    (epoch counts from 1), before the best-epoch selection; like ``before_step`` it must not
    change the model or draw random numbers. Without either, training is unchanged.

    Raises :class:`TrainingDivergedError`, naming the epoch and the learning rate, when an
    epoch's mean training loss is not finite (or an optimizer step overflows); logs a
    warning when the last epoch's training loss ends far above the start
    (:attr:`LossHistory.rose_far`).

    With ``settings.select_best_epoch`` and ``settings.patience``, training ends early once
    ``patience`` epochs in a row brought no lower validation loss (the history is then
    shorter than ``settings.epochs``).
    """
    train = data.splits["train"].select_tasks(task_indices)
    val = data.splits["val"].select_tasks(task_indices)
    n_examples = train.labels.shape[0]
    if n_examples == 0:
        raise ValueError(f"no training examples for tasks {task_indices.tolist()}")
    generator = torch.Generator().manual_seed(seed)
    # fused (where torch has the kernel): one pass over each tensor instead of several
    # elementwise operations with temporaries, a large share of a small network's step
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay,
        fused=train.labels.device.type in ("cpu", "cuda"),
    )
    best_loss, best_state, best_epoch = float("inf"), None, 0
    history = LossHistory()
    step = 0
    for _ in range(settings.epochs):
        model.train()
        order = torch.randperm(n_examples, generator=generator).to(train.labels.device)
        epoch_loss = 0.0
        for start in range(0, n_examples, settings.batch_size):
            batch = order[start : start + settings.batch_size]
            regression = None if train.regression is None else train.regression[batch]
            if before_step is not None:
                minibatch = SplitTensors(
                    train.features[batch], train.labels[batch], train.task_index[batch],
                    regression,
                )
                before_step(step, model, minibatch)
            step += 1
            outputs = model(train.features[batch], train.task_index[batch])
            if task_weights is None:
                loss = example_losses(outputs, train.labels[batch], regression).mean()
            else:
                loss = (
                    example_losses(outputs, train.labels[batch], regression)
                    * task_weights[train.task_index[batch]]
                ).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            try:
                optimizer.step()
            except RuntimeError as error:
                if "overflow" not in str(error):
                    raise
                raise TrainingDivergedError(
                    f"training diverged: an optimizer step of epoch {len(history) + 1} of "
                    f"{settings.epochs} overflowed ({error}) with lr = {settings.lr:g}; "
                    f"{LOWER_LR}"
                ) from None
            batch_loss = loss.item()
            if history.start is None:
                history.start = batch_loss  # at the initial parameters
            epoch_loss += batch_loss * batch.numel()
        history.append(epoch_loss / n_examples)
        if not math.isfinite(history[-1]):
            raise diverged(history, settings.epochs, settings)
        if after_epoch is not None:
            after_epoch(len(history), model)
        if settings.select_best_epoch:
            model.eval()
            val_loss, counts, _ = per_task_losses(model, val, data.n_tasks)
            score = float(val_loss[counts > 0].mean())
            if score < best_loss:
                best_loss, best_state = score, copy.deepcopy(model.state_dict())
                best_epoch = len(history)
            if settings.patience is not None and len(history) - best_epoch >= settings.patience:
                break
    if history.rose_far:
        log.warning(
            "training loss rose from %.4g at the start to %.4g in the last epoch (%d) with "
            "lr = %g: the training may have diverged; %s",
            history.start, history[-1], len(history), settings.lr, LOWER_LR,
        )
    if best_state is not None:
        model.load_state_dict(best_state)
        history.kept_epoch = best_epoch
    model.eval()
    return history


def diverged(history: LossHistory, epochs: int, settings: TrainSettings,
             model: str = "") -> TrainingDivergedError:
    """The error for a training whose last epoch in ``history`` (of ``epochs``) ended with a
    non-finite mean loss; ``model`` names the model when several train at once."""
    return TrainingDivergedError(
        f"training diverged: the mean training loss of epoch {len(history)} of {epochs} is "
        f"{history[-1]} (at the start {history.start:.4g}) {model}with Adam, lr = "
        f"{settings.lr:g}, batch_size = {settings.batch_size}, weight_decay = "
        f"{settings.weight_decay:g}; {LOWER_LR}"
    )


LOWER_LR = (
    "lower the learning rate (lr of the config section of this training: meta_init, "
    "finetune or final)"
)


def evaluate(
    model: MultiHeadNet, data: TaskData, task_indices: torch.Tensor, splits=("val", "test"),
    metric: str = "auto",
) -> pd.DataFrame:
    """Per-task loss and metric of the tasks in ``task_indices``: columns task, split,
    loss (mean binary cross-entropy in nats for binary tasks, mean squared error for
    regression tasks), metric (``metric``, the value of evaluation.metric; "auto": accuracy
    for binary tasks, R^2 for regression tasks; see :mod:`taskgroup.models.metrics`), n_examples."""
    model.eval()
    metrics = resolve_metrics(metric, data.types, data.task_names)
    rows = []
    for split in splits:
        rows += task_values(model, data, task_indices, split, metrics)
    return pd.DataFrame(rows)


def task_values(
    model: MultiHeadNet, data: TaskData, task_indices: torch.Tensor, split: str,
    metrics: list[str],
) -> list[dict]:
    """The rows of :func:`evaluate` for one ``split``, as dicts (task, split, loss, metric,
    n_examples), in the order of ``task_indices``; ``metrics``: every task's metric name
    (:func:`taskgroup.models.metrics.resolve_metrics`). The model (in the mode it is in)
    sees only these tasks' examples: the others' outputs are not computed."""
    tensors = data.splits[split].select_tasks(task_indices)
    loss, counts, outputs = per_task_losses(model, tensors, data.n_tasks)
    values = per_task_metric(
        outputs, tensors.labels, tensors.task_index, metrics, data.task_names,
        context=f"split {split!r}",
    )[:, 0]
    return [
        {
            "task": data.task_names[index],
            "split": split,
            "loss": float(loss[index]),
            "metric": float(values[index]),
            "n_examples": int(counts[index]),
        }
        for index in task_indices.tolist()
    ]


def train_new_model(
    data: TaskData, task_indices: torch.Tensor, hidden_sizes: list[int],
    settings: TrainSettings, seed: int, device: torch.device,
    before_step: Callable[[int, MultiHeadNet, SplitTensors], None] | None = None,
    task_weights: torch.Tensor | None = None,
    after_epoch: Callable[[int, MultiHeadNet], None] | None = None,
    before_training: Callable[[MultiHeadNet], None] | None = None,
    after_training: Callable[[LossHistory], None] | None = None,
) -> MultiHeadNet:
    """A freshly initialized network (seeded) trained on ``task_indices`` (``before_step``,
    ``task_weights``, ``after_epoch``: see :func:`fit`; ``before_training(model)``, if given,
    sees the initialized model before the first step and must not change it;
    ``after_training(history)``, if given, receives :func:`fit`'s loss history)."""
    torch.manual_seed(seed)
    model = MultiHeadNet(data.n_features, data.n_tasks, hidden_sizes).to(device)
    if before_training is not None:
        before_training(model)
    history = fit(
        model, data, task_indices, settings, seed=seed, before_step=before_step,
        task_weights=task_weights, after_epoch=after_epoch,
    )
    if after_training is not None:
        after_training(history)
    return model
