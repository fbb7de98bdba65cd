"""Covariance alignment (Wu, Zhang and Re, ICLR 2020, section 2.3, Algorithm 1).

Each task i gets an alignment matrix R_i (p x p, initialized to the identity) applied to its
inputs before the shared trunk B: the network computes head_i(trunk(x R_i)) for an example
x (a row vector) of task i. Algorithm 1 keeps B fixed and minimizes the loss over the output
modules A_i (our heads: head weight and bias) and the R_i "by alternately applying a
gradient descent update on A_i and R_i, given a sampled data batch".

The schedule implemented here (:func:`train_alignment`), run after the usual joint training
of trunk and heads (phase 1, :func:`taskgroup.models.training.fit`):

- phase 2 runs ``epochs`` passes over the group's training examples in shuffled minibatches
  of the training's batch size (mixed tasks, as in phase 1; the shuffling is seeded by
  derived_seed(seed, "alignment"));
- on every minibatch: (a) one Adam step (learning rate ``head_lr``, the training's weight
  decay) on the heads with the R_i and the trunk fixed; then (b) the loss is recomputed on the
  same minibatch with the updated heads and one Adam step (learning rate ``lr``, no weight
  decay) is taken on the R_i with the heads and the trunk fixed. The trunk is never updated;
- the loss is the training loss of phase 1 (per-task weighted when reweighting is on);
- with best-epoch selection (the final models), the state with the lowest mean validation
  loss over the group's tasks among the start of phase 2 (epoch 0, the phase-1 model with
  R_i = I) and the end of every phase-2 epoch is kept, so alignment is only kept when it
  lowers the validation loss.

With R_i = I, x R_i = x exactly in floating point, so an aligned network whose matrices are
the identity computes bit-identical outputs to its base network; with ``epochs = 0`` (or both
learning rates 0) phase 2 changes nothing and training equals plain training.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from taskgroup.data.examples import TaskData
from taskgroup.models.metrics import example_losses
from taskgroup.models.network import AlignedNet
from taskgroup.models.training import per_task_losses


@dataclass(frozen=True)
class AlignmentSettings:
    """Phase 2 of Algorithm 1 (see the module docstring): ``epochs`` passes, Adam learning
    rate ``lr`` for the alignment matrices and ``head_lr`` for the heads."""

    epochs: int
    lr: float
    head_lr: float


def _minibatch_loss(model, train, batch, task_weights):
    regression = None if train.regression is None else train.regression[batch]
    outputs = model(train.features[batch], train.task_index[batch])
    losses = example_losses(outputs, train.labels[batch], regression)
    if task_weights is not None:
        losses = losses * task_weights[train.task_index[batch]]
    return losses.mean()


def _step(optimizer, parameters, loss) -> None:
    grads = torch.autograd.grad(loss, parameters)
    for parameter, grad in zip(parameters, grads):
        parameter.grad = grad
    optimizer.step()
    for parameter in parameters:
        parameter.grad = None


def train_alignment(
    model: AlignedNet, data: TaskData, task_indices: torch.Tensor,
    settings: AlignmentSettings, batch_size: int, seed: int, weight_decay: float = 0.0,
    select_best_epoch: bool = True, task_weights: torch.Tensor | None = None,
    after_epoch: Callable[[int, nn.Module], None] | None = None,
) -> tuple[list[float], int]:
    """Phase 2 of Algorithm 1 on the tasks ``task_indices``, in place: alternate head and
    alignment steps with the trunk fixed. Returns the mean training loss of each epoch
    (after the head steps) and the kept epoch (0 = the starting state)."""
    train = data.splits["train"].select_tasks(task_indices)
    val = data.splits["val"].select_tasks(task_indices)
    n_examples = train.labels.shape[0]
    if n_examples == 0:
        raise ValueError(f"no training examples for tasks {task_indices.tolist()}")
    heads = [model.base.head_weight, model.base.head_bias]
    head_optimizer = torch.optim.Adam(heads, lr=settings.head_lr, weight_decay=weight_decay)
    align_optimizer = torch.optim.Adam([model.alignment], lr=settings.lr)
    generator = torch.Generator().manual_seed(seed)

    def score() -> float:
        model.eval()
        loss, counts, _ = per_task_losses(model, val, data.n_tasks)
        return float(loss[counts > 0].mean())

    best_epoch, best_loss = 0, score() if select_best_epoch else float("inf")
    best_state = copy.deepcopy(model.state_dict()) if select_best_epoch else None
    history = []
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.randperm(n_examples, generator=generator).to(train.labels.device)
        epoch_loss = 0.0
        for start in range(0, n_examples, batch_size):
            batch = order[start : start + batch_size]
            loss = _minibatch_loss(model, train, batch, task_weights)
            _step(head_optimizer, heads, loss)
            epoch_loss += loss.item() * batch.numel()
            _step(align_optimizer, [model.alignment],
                  _minibatch_loss(model, train, batch, task_weights))
        history.append(epoch_loss / n_examples)
        if after_epoch is not None:
            after_epoch(epoch, model)
        if select_best_epoch:
            current = score()
            if current < best_loss:
                best_epoch, best_loss = epoch, current
                best_state = copy.deepcopy(model.state_dict())
    if select_best_epoch:
        model.load_state_dict(best_state)
    else:
        best_epoch = settings.epochs
    model.eval()
    return history, best_epoch
