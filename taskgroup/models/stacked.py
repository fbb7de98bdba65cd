"""Many multi-head networks trained at once, in one process.

The parameters of M networks of one architecture are stacked along a leading model axis;
every step runs one batched forward and backward pass over the M models' minibatches and
one Adam update of the stacked parameters (each model's rows as its own Adam would move
them). Each model keeps everything it would have had if trained alone by
:func:`taskgroup.models.training.train_new_model`: its seeded initialization, its own
minibatch order (its own generator), its step count, its loss weights and its best-epoch
selection. The results equal those of separate trainings up to float rounding (the batched
products sum in another order). What it saves is the per-model overhead: for the small
networks of the final training, a step costs about the same for one model as for hundreds.

The models step together: step j is each model's j-th minibatch of its own sequence of
epochs. A model with fewer training examples ends its epochs sooner (and reshuffles and is
scored on its validation rows sooner); a model that has taken all its epochs, or stopped
early (its patience), leaves the stack, so a step costs what the models still training
need. Each model carries the heads of its own tasks only: the heads of the other tasks of
the data see no example of the model's, and keep their initial values (trained alone with
a ``weight_decay``, Adam would shrink them; no output on the model's tasks depends on them).
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from dataclasses import dataclass

import torch
from torch.optim.adam import adam as adam_update

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
# Seconds between progress lines of a long stack in the job's log.
PROGRESS_SECONDS = 30.0

# Padded validation rows scored at once (about 20 MB of features at 20 features).
VALIDATION_CHUNK_ROWS = 2**18
# Each model of a validation chunk has at least this share of the rows of its largest:
# padding is computed like rows (the final training's groups of 1 to 10 tasks, in one
# chunk, made the scoring cost as much as the training steps).
VALIDATION_CHUNK_FILL = 0.75
# torch.optim.Adam's defaults, which train_new_model uses.
BETAS = (0.9, 0.999)
EPS = 1e-8


@dataclass(frozen=True)
class ModelSpec:
    """One network to train: the tasks whose training examples it sees (``task_indices``,
    int64 (n_members,)), its seed (initialization and minibatch order, as the ``seed`` of
    :func:`train_new_model`), optional per-task loss weights (``task_weights``,
    (n_tasks,) float, as in :func:`taskgroup.models.training.fit`), its number of epochs
    (None: the settings' ``epochs``) and its patience (None: the settings' ``patience``)."""

    task_indices: torch.Tensor
    seed: int
    task_weights: torch.Tensor | None = None
    epochs: int | None = None
    patience: int | None = None


def train_new_models(
    data: TaskData, specs: list[ModelSpec], hidden_sizes: list[int],
    settings: TrainSettings, device: torch.device,
) -> list[tuple[MultiHeadNet, LossHistory]]:
    """Train one fresh network per spec, all at once; returns (model, loss history) per spec,
    in order, each model in eval mode on ``device``.

    Same contract as :func:`taskgroup.models.training.train_new_model` for each spec (Adam
    with ``settings``, for the spec's own ``epochs`` or ``settings.epochs``; best validation
    epoch kept with ``settings.select_best_epoch``, early stop after the spec's ``patience``
    or ``settings.patience``), up to float rounding; the heads of tasks outside a spec keep
    their initial values (module docstring). The models step
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
    :func:`taskgroup.resources.models_per_stack` allows, one stack after another. The
    results do not depend on the stacking beyond float rounding: some BLAS builds compute a
    matrix of a batched product with a kernel that depends on its place in the batch, so
    a model's bytes may depend on which models share its stack (never between two runs
    of the same models). Raises what :func:`train_new_models` raises."""
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
        log.info("stack %d of %d: models %d to %d of %d", first // per_stack + 1,
                 -(-len(models) // per_stack), first + 1, min(first + per_stack, len(models)),
                 len(models))
        trained += _fit_stack(
            models[first : first + per_stack], data, specs[first : first + per_stack],
            settings, device,
        )
    return trained


def _fit_stack(models, data, specs, settings, device):
    """:func:`fit_models` on one stack."""
    train, val = data.splits["train"], data.splits["val"]
    rows = [_rows_of(train.task_index, spec.task_indices) for spec in specs]
    for spec, model_rows in zip(specs, rows):
        if model_rows.numel() == 0:
            raise ValueError(f"no training examples for tasks {spec.task_indices.tolist()}")
    batch_size = settings.batch_size
    n_rows = [len(model_rows) for model_rows in rows]
    epoch_steps = [-(-n // batch_size) for n in n_rows]
    epochs = [settings.epochs if spec.epochs is None else spec.epochs for spec in specs]
    patience = [
        settings.patience if spec.patience is None else spec.patience for spec in specs
    ]
    stopping = settings.select_best_epoch
    generators = [torch.Generator().manual_seed(spec.seed) for spec in specs]
    histories = [LossHistory() for _ in specs]
    stack = _Stack(models, specs, data.n_tasks, device)
    # Per live model (row m of each tensor; rows of finished models are dropped): its
    # training rows, the order of its current epoch (positions into them, shuffled, -1 past
    # its rows), its validation rows, its step within the epoch, ...
    padded_rows, _ = _padded(rows)
    val_rows, val_counts = _padded([_rows_of(val.task_index, spec.task_indices)
                                    for spec in specs])
    weights = _weight_matrix(specs, data.n_tasks, device)
    state = {
        "rows": padded_rows.to(device),
        "order": torch.full((len(specs), max(epoch_steps) * batch_size), -1,
                            dtype=torch.long, device=device),
        "val_rows": val_rows.to(device),
        "val_counts": val_counts.to(device),
        "steps_per_epoch": torch.tensor(epoch_steps, device=device),
        "position": torch.zeros(len(specs), dtype=torch.long, device=device),
        "epoch_loss": torch.zeros(len(specs), device=device),
        "best_score": torch.full((len(specs),), float("inf"), device=device),
        "has_best": torch.zeros(len(specs), dtype=torch.bool, device=device),
        "model": torch.arange(len(specs), device=device),  # its index in ``specs``
    }
    if weights is not None:
        state["weights"] = weights
    best_epoch = [0] * len(specs)
    _shuffle(state["order"], list(range(len(specs))), list(range(len(specs))), n_rows,
             generators)
    offsets = torch.arange(batch_size, device=device)
    adam = _StackedAdam(stack, settings.lr, settings.weight_decay)
    best = [p.detach().clone() for p in stack.parameters]
    step = 0
    started = reported = time.monotonic()
    while len(state["model"]):
        position = state["position"]
        ids = state["order"].gather(1, (position * batch_size).unsqueeze(1) + offsets)
        present = ids >= 0
        counts = present.sum(dim=1)
        ids = state["rows"].gather(1, ids.clamp(min=0))
        task_index = train.task_index[ids]
        outputs = stack.forward(train.features[ids], task_index)
        regression = None if train.regression is None else train.regression[ids]
        losses = example_losses(outputs, train.labels[ids], regression)
        if weights is not None:
            losses = losses * torch.gather(state["weights"], 1, task_index)
        batch_loss = (losses * present).sum(dim=1) / counts.clamp(min=1)
        gradients = torch.autograd.grad(batch_loss.sum(), stack.parameters)
        adam.step(gradients)
        batch_loss = batch_loss.detach()
        if step == 0:  # at the initial parameters, as fit records it
            for history, value in zip(histories, batch_loss.tolist()):
                history.start = value
        step += 1
        state["epoch_loss"] += batch_loss * counts
        position += 1
        ended = position == state["steps_per_epoch"]
        if not bool(ended.any()):
            continue
        finished = torch.nonzero(ended).flatten()
        finished_models = state["model"][finished].tolist()
        for m, value in zip(finished_models, state["epoch_loss"][finished].tolist()):
            histories[m].append(value / n_rows[m])
            if not math.isfinite(histories[m][-1]):
                raise diverged(histories[m], epochs[m], settings, (
                    f"for the model of tasks {specs[m].task_indices.tolist()}, seed "
                    f"{specs[m].seed}, "
                ))
        state["epoch_loss"][finished] = 0.0
        position[finished] = 0
        if stopping:
            score = _validation_scores(stack, val, state["val_rows"], state["val_counts"],
                                       finished, data.n_tasks)
            improved = score < state["best_score"][finished]
            state["best_score"][finished] = torch.where(improved, score,
                                                        state["best_score"][finished])
            state["has_best"][finished] |= improved
            for m in torch.tensor(finished_models)[improved.cpu()].tolist():
                best_epoch[m] = len(histories[m])
            _copy_rows(best, stack.parameters, stack.owners, finished[improved],
                       len(state["model"]))
        done = [
            len(histories[m]) == epochs[m] or (
                stopping and patience[m] is not None
                and len(histories[m]) - best_epoch[m] >= patience[m]
            )
            for m in finished_models
        ]
        renew = [live for live, m_done in zip(finished.tolist(), done) if not m_done]
        _shuffle(state["order"], renew, [finished_models[i] for i, d in enumerate(done)
                                         if not d], n_rows, generators)
        if any(done):
            gone = finished[torch.tensor(done, device=device)]
            if stopping:  # the best epoch's parameters, where there is one
                _copy_rows(stack.parameters, best, stack.owners,
                           gone[state["has_best"][gone]], len(state["model"]))
            stack.unstack_into(models, state["model"], gone, specs)
            live = torch.ones(len(state["model"]), dtype=torch.bool, device=device)
            live[gone] = False
            kept = stack.keep(live, [adam.first, adam.second, best])
            adam.keep(kept)
            best = kept[2]
            for name, tensor in state.items():
                state[name] = tensor[live]
        if time.monotonic() - reported >= PROGRESS_SECONDS or not len(state["model"]):
            reported = time.monotonic()
            log.info("%d of %d models finished after %d steps (%.0f steps/s)",
                     len(specs) - len(state["model"]), len(specs), step,
                     step / max(reported - started, 1e-9))
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


def _copy_rows(targets, sources, owners, models: torch.Tensor, n_models: int) -> None:
    """Copy the rows of the (live) ``models`` from each stacked tensor of ``sources`` into
    ``targets``; ``owners``: per tensor, the model of each row (None: row m is model m)."""
    if models.numel() == 0:
        return
    chosen = torch.zeros(n_models, dtype=torch.bool, device=models.device)
    chosen[models] = True
    with torch.no_grad():
        for target, source, owner in zip(targets, sources, owners):
            rows = chosen if owner is None else chosen[owner]
            target[rows] = source.detach()[rows]


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


def _shuffle(order: torch.Tensor, rows: list, models: list, n_rows: list,
             generators: list) -> None:
    """Write the next epoch's shuffle of each of ``models`` (indices into ``n_rows`` and
    ``generators``) into its row of ``order`` (``rows``, in the same order): a permutation
    of its n_rows positions drawn from its own generator (as fit draws it)."""
    if not models:
        return
    permutations = [torch.randperm(n_rows[m], generator=generators[m]) for m in models]
    which = torch.repeat_interleave(torch.tensor(rows), torch.tensor([n_rows[m] for m in models]))
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


def _validation_scores(stack, val, val_rows: torch.Tensor, val_counts: torch.Tensor,
                       models: torch.Tensor, n_tasks: int) -> torch.Tensor:
    """(S,) each of the live ``models``' (S,) mean over its tasks (those with validation
    rows) of the mean validation loss, the score fit's best-epoch selection uses;
    ``val_rows`` (M, width): each live model's validation row positions, -1 after them, and
    ``val_counts`` (M,) their numbers. Models are scored in chunks of similar row counts
    (each at least VALIDATION_CHUNK_FILL of its chunk's largest) holding at most
    :data:`VALIDATION_CHUNK_ROWS` padded rows (the model of all tasks would otherwise pad
    every small model to all the validation rows)."""
    counts = val_counts[models]
    by_size = torch.argsort(counts, descending=True, stable=True)
    # descending counts, negated for bisect (which wants ascending)
    ordered = [-count for count in counts[by_size].tolist()]
    scores = torch.empty(len(models), device=val_rows.device)
    first = 0
    while first < len(models):
        largest = -ordered[first]
        width = max(largest, 1)
        # the chunk ends before the first model of fewer rows than the fill (models
        # without validation rows all in one chunk)
        filled = bisect.bisect_right(ordered, -VALIDATION_CHUNK_FILL * largest, lo=first)
        size = max(1, min(VALIDATION_CHUNK_ROWS // width, filled - first))
        chunk = by_size[first : first + size]
        scores[chunk] = _chunk_scores(stack, val, val_rows[models[chunk], :width],
                                      models[chunk], n_tasks)
        first += size
    return scores


def _chunk_scores(stack, val, ids: torch.Tensor, models: torch.Tensor, n_tasks: int):
    """:func:`_validation_scores` of one chunk; ``ids`` (S, width)."""
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
    per trunk layer a weight, transposed, (M, in, out) and a bias (M, out); then the heads of each
    model's own tasks only, one after another (model 0's tasks in its spec's order, then
    model 1's, ...): a weight (H, width) and a bias (H,), H the sum of the models' task
    counts. A model's step then costs what its own tasks need, whatever the number of tasks
    of the data. ``owners``: per tensor, the model of each row (None: row m is model m);
    ``head_row`` (M, n_tasks): the head row of each model's task (-1: not its task)."""

    def __init__(self, models: list[MultiHeadNet], specs: list[ModelSpec], n_tasks: int,
                 device: torch.device):
        self.layers = [
            index for index, module in enumerate(models[0].trunk)
            if isinstance(module, torch.nn.Linear)
        ]
        tensors = []
        # weights stored transposed, as the batched product reads them: their gradients
        # are then contiguous (those of a transposed view are not, and the fused Adam
        # update needs a copy of each)
        for index in self.layers:
            tensors.append(torch.stack([model.trunk[index].weight.detach().T
                                        for model in models]))
            tensors.append(torch.stack([model.trunk[index].bias.detach() for model in models]))
        members = [spec.task_indices.to(device) for spec in specs]
        tensors.append(torch.cat([
            model.head_weight.detach()[tasks] for model, tasks in zip(models, members)
        ]))
        tensors.append(torch.cat([
            model.head_bias.detach()[tasks] for model, tasks in zip(models, members)
        ]))
        self.parameters = [tensor.clone().requires_grad_(True) for tensor in tensors]
        sizes = torch.tensor([len(tasks) for tasks in members], device=device)
        head_owner = torch.repeat_interleave(torch.arange(len(models), device=device), sizes)
        self.owners = [None] * (2 * len(self.layers)) + [head_owner, head_owner]
        self.head_row = torch.full((len(models), n_tasks), -1, dtype=torch.long, device=device)
        first = 0
        for m, tasks in enumerate(members):
            self.head_row[m, tasks] = torch.arange(first, first + len(tasks), device=device)
            first += len(tasks)

    def forward(
        self, features: torch.Tensor, task_index: torch.Tensor,
        models: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Outputs (M, B) of model m's own head on its examples: features (M, B, p),
        task_index (M, B) (each example's task must be one of the model's); with ``models``
        (S,) only those models (features (S, B, p)). The output of an example of another
        task is that of some head of the model (callers mask it out)."""
        trunk = self.parameters[: 2 * len(self.layers)]
        head_row = self.head_row
        if models is not None:
            trunk = [parameter[models] for parameter in trunk]
            head_row = head_row[models]
        hidden = features
        for layer in range(len(self.layers)):
            weight, bias = trunk[2 * layer], trunk[2 * layer + 1]
            hidden = torch.relu(torch.baddbmm(bias.unsqueeze(1), hidden, weight))
        head_weight, head_bias = self.parameters[-2], self.parameters[-1]
        rows = torch.gather(head_row, 1, task_index).clamp(min=0)
        return (hidden * head_weight[rows]).sum(dim=-1) + head_bias[rows]

    def unstack_into(self, models: list[MultiHeadNet], model_of: torch.Tensor,
                     rows: torch.Tensor, specs: list[ModelSpec]) -> None:
        """Copy the parameters of the live models ``rows`` into their networks
        (``models[model_of[row]]``, trained on ``specs[model_of[row]]``): the trunk and the
        heads of the model's tasks; the heads of other tasks keep their values (no example
        of theirs reaches the model)."""
        with torch.no_grad():
            for row in rows.tolist():
                m = int(model_of[row])
                model, tasks = models[m], specs[m].task_indices
                targets = []
                for index in self.layers:
                    # the weight back from its stored transpose
                    targets += [model.trunk[index].weight.T, model.trunk[index].bias]
                for target, stacked in zip(targets, self.parameters):
                    target.copy_(stacked[row])
                head_rows = self.head_row[row, tasks.to(self.head_row.device)]
                model.head_weight[tasks.to(model.head_weight.device)] = (
                    self.parameters[-2][head_rows].to(model.head_weight.device)
                )
                model.head_bias[tasks.to(model.head_bias.device)] = (
                    self.parameters[-1][head_rows].to(model.head_bias.device)
                )

    def keep(self, live: torch.Tensor, companions: list[list[torch.Tensor]]):
        """Drop the models not ``live`` ((M,) bool): their rows of the parameters and of
        each list of tensors shaped like them in ``companions`` (optimizer state, best
        parameters); returns the companions' kept rows, in the same structure."""
        masks = [live if owner is None else live[owner] for owner in self.owners]
        self.parameters = [
            parameter.detach()[mask].requires_grad_(True)
            for parameter, mask in zip(self.parameters, masks)
        ]
        kept = [[tensor[mask] for tensor, mask in zip(tensors, masks)] for tensors in companions]
        head_live = masks[-1]
        new_index = torch.cumsum(live.long(), 0) - 1
        new_row = torch.cumsum(head_live.long(), 0) - 1
        owner = new_index[self.owners[-1][head_live]]
        self.owners = [None] * (2 * len(self.layers)) + [owner, owner]
        head_row = self.head_row[live]
        self.head_row = torch.where(head_row >= 0, new_row[head_row.clamp(min=0)], head_row)
        return kept


class _StackedAdam:
    """Adam (torch.optim.Adam's update, L2 ``weight_decay`` added to the gradient) over the
    stacked parameters. Every model of a stack takes every step from the first (models
    only leave it), so one step count serves them all, and the update is torch's fused
    Adam where torch has it (CPU, CUDA): one pass over each tensor, where the same update
    in separate elementwise operations makes temporaries of its size (README, "Scaling")."""

    def __init__(self, stack: _Stack, lr: float, weight_decay: float):
        self.stack = stack
        self.lr, self.weight_decay = lr, weight_decay
        self.first = [torch.zeros_like(p) for p in stack.parameters]
        self.second = [torch.zeros_like(p) for p in stack.parameters]
        self.fused = stack.parameters[0].device.type in ("cpu", "cuda")
        # one count per tensor (the update advances each it is given), float32 as
        # torch.optim.Adam keeps it: on the device for the fused kernel, else on the CPU
        # (read as a number at every step); equal throughout
        self.steps = [
            torch.zeros((), dtype=torch.float32, device=p.device if self.fused else "cpu")
            for p in stack.parameters
        ]

    def keep(self, kept: list) -> None:
        """After :meth:`_Stack.keep`: the live models' state (``kept``: the first and
        second moments' rows :meth:`_Stack.keep` returned first)."""
        self.first, self.second = kept[0], kept[1]

    @torch.no_grad()
    def step(self, gradients) -> None:
        beta1, beta2 = BETAS
        # the fused kernel reads a tensor's memory in order: a non-contiguous gradient (that
        # of a weight used transposed in a batched product) gave wrong updates; the stack's
        # are contiguous (its weights are stored as the product reads them), and this a no-op
        gradients = [gradient.contiguous() for gradient in gradients]
        adam_update(
            self.stack.parameters, gradients, self.first, self.second, [], self.steps,
            fused=self.fused, amsgrad=False, beta1=beta1, beta2=beta2, lr=self.lr,
            weight_decay=self.weight_decay, eps=EPS, maximize=False,
        )
