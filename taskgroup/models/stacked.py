"""Many multi-head networks trained at once, in one process.

The parameters of M networks of one architecture are stacked along a leading model axis;
every step runs one batched forward and backward pass over the M models' minibatches and
one Adam update per model. Each model keeps everything it would have had if trained alone by
:func:`taskgroup.models.training.train_new_model`: its seeded initialization, its own
minibatch order (its own generator), its own step count, its loss weights and its best-epoch
selection. The results equal those of separate trainings up to float rounding (the batched
products sum in another order). What it saves is the per-model overhead: for the small
networks of the final training, a step costs about the same for one model as for hundreds.

The models step together: step j is each model's j-th minibatch of its own sequence of
epochs. A model with fewer training examples ends its epochs sooner (and reshuffles and is
scored on its validation rows sooner); a model that has taken all its steps sits out the
rest (no update, its Adam state unchanged).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from taskgroup.data.examples import TaskData
from taskgroup.models.metrics import example_losses
from taskgroup.models.network import MultiHeadNet
from taskgroup.models.training import (
    LOWER_LR,
    LossHistory,
    TrainSettings,
    diverged,
)
from taskgroup.resources import models_per_stack

log = logging.getLogger(__name__)

# torch.optim.Adam's defaults, which train_new_model uses.
BETAS = (0.9, 0.999)
EPS = 1e-8


@dataclass(frozen=True)
class ModelSpec:
    """One network to train: the tasks whose training examples it sees (``task_indices``,
    int64 (n_members,)), its seed (initialization and minibatch order, as the ``seed`` of
    :func:`train_new_model`), optional per-task loss weights (``task_weights``,
    (n_tasks,) float, as in :func:`taskgroup.models.training.fit`), and its number of epochs
    (None: the settings' ``epochs``)."""

    task_indices: torch.Tensor
    seed: int
    task_weights: torch.Tensor | None = None
    epochs: int | None = None


def train_new_models(
    data: TaskData, specs: list[ModelSpec], hidden_sizes: list[int],
    settings: TrainSettings, device: torch.device,
) -> list[tuple[MultiHeadNet, LossHistory]]:
    """Train one fresh network per spec, all at once; returns (model, loss history) per spec,
    in order, each model in eval mode on ``device``.

    Same contract as :func:`taskgroup.models.training.train_new_model` for each spec (Adam
    with ``settings``, for the spec's own ``epochs`` or ``settings.epochs``; best validation
    epoch kept with ``settings.select_best_epoch``), up to float rounding. The models step
    together: step j is every model's j-th minibatch, so a model with fewer rows starts its
    next epoch (a new shuffle, its validation score) sooner, and a model with fewer steps in
    all stops earlier. ``data`` must be on ``device``.

    Raises ValueError if a spec's tasks have no training example, and
    :class:`TrainingDivergedError` naming the model's tasks, seed and epoch if its mean
    training loss of an epoch is not finite."""
    models = []
    for spec in specs:
        torch.manual_seed(spec.seed)  # the initialization train_new_model draws
        models.append(MultiHeadNet(data.n_features, data.n_tasks, hidden_sizes).to(device))
    return fit_models(models, data, specs, settings, device)


def fit_models(
    models: list[MultiHeadNet], data: TaskData, specs: list[ModelSpec],
    settings: TrainSettings, device: torch.device,
) -> list[tuple[MultiHeadNet, LossHistory]]:
    """Train ``models`` (networks of one architecture on ``device``, e.g. copies of one
    meta-initialization) in place, model m as :func:`taskgroup.models.training.fit` trains it
    on ``specs[m]`` (its tasks, its seed for the minibatch order, its loss weights and
    epochs), all at once; returns (model, loss history) per model, in order, in eval mode.

    The models are stacked as many at a time as
    :func:`taskgroup.resources.models_per_stack` allows, one stack after another (the
    results do not depend on the stacking). Raises what :func:`train_new_models` raises."""
    if len(models) != len(specs):
        raise ValueError(f"{len(models)} models but {len(specs)} specs")
    if not models:
        return []
    widest = max(data.n_features, *(layer.out_features for layer in models[0].trunk
                                     if isinstance(layer, torch.nn.Linear)))
    per_stack = models_per_stack(
        sum(p.numel() for p in models[0].parameters()),
        data.splits["val"].labels.shape[0], widest,
    )
    trained = []
    for first in range(0, len(models), per_stack):
        trained += _fit_stack(
            models[first : first + per_stack], data, specs[first : first + per_stack],
            settings, device,
        )
    return trained


def _fit_stack(models, data, specs, settings, device):
    """:func:`fit_models` on one stack."""
    stack = _Stack(models)
    train, val = data.splits["train"], data.splits["val"]
    rows = [_rows_of(train.task_index, spec.task_indices) for spec in specs]
    for spec, model_rows in zip(specs, rows):
        if model_rows.numel() == 0:
            raise ValueError(f"no training examples for tasks {spec.task_indices.tolist()}")
    batch_size = settings.batch_size
    n_models = len(specs)
    n_rows = [len(model_rows) for model_rows in rows]
    epoch_steps = [-(-n // batch_size) for n in n_rows]
    epochs = [settings.epochs if spec.epochs is None else spec.epochs for spec in specs]
    total_steps = torch.tensor([e * s for e, s in zip(epochs, epoch_steps)], device=device)
    steps_per_epoch = torch.tensor(epoch_steps, device=device)
    weights = _weight_matrix(specs, data.n_tasks, device)
    val_rows, val_counts = _padded([
        _rows_of(val.task_index, spec.task_indices) for spec in specs
    ])
    val_rows, val_counts = val_rows.to(device), val_counts.to(device)
    generators = [torch.Generator().manual_seed(spec.seed) for spec in specs]
    # Each model's training rows, and the order of its current epoch: positions into them,
    # shuffled, -1 past its rows.
    rows, _ = _padded(rows)
    rows = rows.to(device)
    order = torch.full((n_models, max(epoch_steps) * batch_size), -1, dtype=torch.long,
                       device=device)
    _shuffle(order, list(range(n_models)), n_rows, generators)
    offsets = torch.arange(batch_size, device=device)
    position = torch.zeros(n_models, dtype=torch.long, device=device)  # step within epoch
    adam = _StackedAdam(stack.parameters, settings.lr, settings.weight_decay)
    histories = [LossHistory() for _ in specs]
    best_score = torch.full((n_models,), float("inf"), device=device)
    best = [p.detach().clone() for p in stack.parameters]
    has_best = torch.zeros(n_models, dtype=torch.bool, device=device)
    epoch_loss = torch.zeros(n_models, device=device)
    for step in range(int(total_steps.max())):
        active = step < total_steps
        ids = order.gather(1, (position * batch_size).unsqueeze(1) + offsets)
        present = (ids >= 0) & active.unsqueeze(1)
        counts = present.sum(dim=1)
        ids = rows.gather(1, ids.clamp(min=0))
        task_index = train.task_index[ids]
        outputs = stack.forward(train.features[ids], task_index)
        regression = None if train.regression is None else train.regression[ids]
        losses = example_losses(outputs, train.labels[ids], regression)
        if weights is not None:
            losses = losses * torch.gather(weights, 1, task_index)
        batch_loss = (losses * present).sum(dim=1) / counts.clamp(min=1)
        gradients = torch.autograd.grad(batch_loss.sum(), stack.parameters)
        adam.step(gradients, active)
        batch_loss = batch_loss.detach()
        if step == 0:  # at the initial parameters, as fit records it
            for history, value in zip(histories, batch_loss.tolist()):
                history.start = value
        epoch_loss += batch_loss * counts
        position += active.long()
        ended = active & (position == steps_per_epoch)
        if not bool(ended.any()):
            continue
        finished = torch.nonzero(ended).flatten()
        renew = []
        for m, value in zip(finished.tolist(), epoch_loss[finished].tolist()):
            history = histories[m]
            history.append(value / n_rows[m])
            if len(history) < epochs[m]:
                renew.append(m)
            if not math.isfinite(history[-1]):
                raise diverged(history, epochs[m], settings, (
                    f"for the model of tasks {specs[m].task_indices.tolist()}, seed "
                    f"{specs[m].seed}, "
                ))
        _shuffle(order, renew, n_rows, generators)
        epoch_loss[finished] = 0.0
        position[finished] = 0
        if settings.select_best_epoch:
            width = int(val_counts[finished].max())
            score = _validation_scores(stack, val, val_rows[finished, :width], finished,
                                       data.n_tasks)
            improved = score < best_score[finished]
            best_score[finished] = torch.where(improved, score, best_score[finished])
            has_best[finished] |= improved
            keep = finished[improved]
            for kept, current in zip(best, stack.parameters):
                kept[keep] = current.detach()[keep]
    if settings.select_best_epoch:
        with torch.no_grad():
            for kept, current in zip(best, stack.parameters):
                current.copy_(torch.where(_expand(has_best, kept), kept, current))
    stack.unstack_into(models)
    for spec, history in zip(specs, histories):
        if history.rose_far:
            log.warning(
                "model of tasks %s (seed %d): training loss rose from %.4g at the start to "
                "%.4g in the last epoch (%d) with lr = %g: the training may have diverged; %s",
                spec.task_indices.tolist(), spec.seed, history.start, history[-1],
                len(history), settings.lr, LOWER_LR,
            )
    for model in models:
        model.eval()
    return list(zip(models, histories))


def _rows_of(task_index: torch.Tensor, task_indices: torch.Tensor) -> torch.Tensor:
    """Positions (ascending, the order SplitTensors.select_tasks keeps) of the rows whose
    task is in ``task_indices``."""
    keep = torch.isin(task_index, task_indices.to(task_index.device))
    return torch.nonzero(keep).flatten().cpu()


def _padded(rows: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, longest) the row positions of each model, -1 after them, and (M,) their counts."""
    counts = torch.tensor([len(r) for r in rows])
    padded = torch.full((len(rows), max(int(counts.max()), 1)), -1, dtype=torch.long)
    for m, model_rows in enumerate(rows):
        padded[m, : len(model_rows)] = model_rows
    return padded, counts


def _shuffle(order: torch.Tensor, models: list, n_rows: list, generators: list) -> None:
    """Write the next epoch's shuffle of each of ``models`` into its row of ``order``:
    a permutation of its n_rows positions drawn from its own generator (as fit draws it)."""
    if not models:
        return
    permutations = [torch.randperm(n_rows[m], generator=generators[m]) for m in models]
    which = torch.repeat_interleave(torch.tensor(models), torch.tensor([n_rows[m] for m in models]))
    columns = torch.cat([torch.arange(len(p)) for p in permutations])
    order[which.to(order.device), columns.to(order.device)] = torch.cat(permutations).to(
        order.device
    )


def _weight_matrix(specs, n_tasks: int, device) -> torch.Tensor | None:
    """(M, n_tasks) loss weights (1 where a spec has none), or None when no spec has any."""
    if all(spec.task_weights is None for spec in specs):
        return None
    return torch.stack([
        torch.ones(n_tasks, device=device) if spec.task_weights is None
        else spec.task_weights.to(device=device, dtype=torch.float32)
        for spec in specs
    ])


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(M,) mask viewed to broadcast against a stacked (M, ...) tensor."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


def _validation_scores(stack, val, ids: torch.Tensor, models: torch.Tensor, n_tasks: int):
    """(S,) each of ``models``' (S,) mean over its tasks (those with validation rows) of the
    mean validation loss, the score fit's best-epoch selection uses; ``ids`` (S, width): each
    model's validation row positions, -1 after them."""
    with torch.no_grad():
        present = ids >= 0
        ids = ids.clamp(min=0)
        task_index = val.task_index[ids]
        outputs = stack.forward(val.features[ids], task_index, models)
        regression = None if val.regression is None else val.regression[ids]
        losses = example_losses(outputs, val.labels[ids], regression) * present
        shape = (ids.shape[0], n_tasks)
        sums = torch.zeros(shape, device=losses.device).scatter_add_(1, task_index, losses)
        counts = torch.zeros(shape, device=losses.device).scatter_add_(
            1, task_index, present.to(losses.dtype)
        )
        scored = counts > 0
        per_task = torch.where(scored, sums / counts.clamp(min=1), torch.zeros_like(sums))
        return per_task.sum(dim=1) / scored.sum(dim=1)


class _Stack:
    """The parameters of M MultiHeadNets stacked along dim 0 (leaf tensors with grad):
    per trunk layer a weight (M, out, in) and a bias (M, out), then the heads
    (M, n_tasks, width) and (M, n_tasks)."""

    def __init__(self, models: list[MultiHeadNet]):
        self.layers = [
            index for index, module in enumerate(models[0].trunk)
            if isinstance(module, torch.nn.Linear)
        ]
        tensors = []
        for index in self.layers:
            tensors.append(torch.stack([model.trunk[index].weight.detach() for model in models]))
            tensors.append(torch.stack([model.trunk[index].bias.detach() for model in models]))
        tensors.append(torch.stack([model.head_weight.detach() for model in models]))
        tensors.append(torch.stack([model.head_bias.detach() for model in models]))
        self.parameters = [tensor.clone().requires_grad_(True) for tensor in tensors]

    def forward(
        self, features: torch.Tensor, task_index: torch.Tensor,
        models: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Outputs (M, B) of model m's own head on its examples: features (M, B, p),
        task_index (M, B); with ``models`` (S,) only those models (features (S, B, p))."""
        parameters = self.parameters
        if models is not None:
            parameters = [parameter[models] for parameter in parameters]
        hidden = features
        for layer in range(len(self.layers)):
            weight, bias = parameters[2 * layer], parameters[2 * layer + 1]
            hidden = torch.relu(torch.baddbmm(bias.unsqueeze(1), hidden, weight.transpose(1, 2)))
        head_weight, head_bias = parameters[-2], parameters[-1]
        width = head_weight.shape[-1]
        heads = torch.gather(
            head_weight, 1, task_index.unsqueeze(-1).expand(*task_index.shape, width)
        )
        return (hidden * heads).sum(dim=-1) + torch.gather(head_bias, 1, task_index)

    def unstack_into(self, models: list[MultiHeadNet]) -> None:
        """Copy model m's slice of the stacked parameters into ``models[m]``."""
        with torch.no_grad():
            for m, model in enumerate(models):
                targets = []
                for index in self.layers:
                    targets += [model.trunk[index].weight, model.trunk[index].bias]
                targets += [model.head_weight, model.head_bias]
                for target, stacked in zip(targets, self.parameters):
                    target.copy_(stacked[m])


class _StackedAdam:
    """Adam (torch.optim.Adam's update, L2 ``weight_decay`` added to the gradient) with one
    step count per model; a model not active in a step keeps its parameters and state."""

    def __init__(self, parameters: list[torch.Tensor], lr: float, weight_decay: float):
        self.parameters = parameters
        self.lr, self.weight_decay = lr, weight_decay
        self.first = [torch.zeros_like(p) for p in parameters]
        self.second = [torch.zeros_like(p) for p in parameters]
        self.steps = torch.zeros(parameters[0].shape[0], dtype=torch.float64,
                                 device=parameters[0].device)

    @torch.no_grad()
    def step(self, gradients, active: torch.Tensor) -> None:
        beta1, beta2 = BETAS
        self.steps += active.to(self.steps.dtype)
        steps = self.steps.clamp(min=1)
        # Bias corrections in float64, like torch's Python-float scalars.
        step_size = (self.lr / (1 - beta1 ** steps)).to(self.parameters[0].dtype)
        correction2 = ((1 - beta2 ** steps) ** 0.5).to(self.parameters[0].dtype)
        for param, grad, first, second in zip(
            self.parameters, gradients, self.first, self.second
        ):
            if self.weight_decay:
                grad = grad.add(param, alpha=self.weight_decay)
            shape = _expand(active, param)
            new_first = torch.lerp(first, grad, 1 - beta1)
            new_second = second.mul(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = new_second.sqrt().div_(_expand(correction2, param)).add_(EPS)
            update = new_first.div(denom).mul_(_expand(step_size, param))
            param.sub_(torch.where(shape, update, torch.zeros_like(update)))
            first.copy_(torch.where(shape, new_first, first))
            second.copy_(torch.where(shape, new_second, second))
