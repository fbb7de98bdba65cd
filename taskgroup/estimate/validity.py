"""How far the first-order model holds: the network against its linear expansion along a
real fine-tuning (the assumption behind :mod:`taskgroup.estimate.linearized`)."""

from __future__ import annotations

import copy

import pandas as pd
import torch
from torch.func import functional_call, jvp

from taskgroup.data.examples import TaskData
from taskgroup.models.metrics import example_losses
from taskgroup.models.network import MultiHeadNet


def first_order_validity(
    meta_model: MultiHeadNet, tuned_model: MultiHeadNet, data: TaskData,
    task_indices: torch.Tensor, scales, subset_id: int,
) -> pd.DataFrame:
    """How well the first-order expansion predicts the network along a real fine-tuning.

    With Delta = theta_S - theta* from a real fine-tuning on subset S, for each scale c the
    member tasks' validation losses of the network at theta* + c Delta are compared with
    those of the expansion f(x; theta*) + c grad f(x; theta*)^T Delta (exact, via a
    Jacobian-vector product); losses by task type (binary cross-entropy, or the mean squared
    error of regression tasks). Returns rows subset_id, task, scale, relative_shift
    (||c Delta|| / ||theta*||), loss_network, loss_first_order, relative_error.
    """
    val = data.splits["val"].select_tasks(task_indices)
    regression = val.regression
    names = [name for name, _ in meta_model.named_parameters()]
    theta = {n: p.detach() for n, p in meta_model.named_parameters()}
    delta = {n: p.detach() - theta[n] for n, p in tuned_model.named_parameters()}
    theta_norm = torch.cat([theta[n].flatten() for n in names]).norm()
    delta_norm = torch.cat([delta[n].flatten() for n in names]).norm()
    meta_model.eval()

    def output(parameters):
        return functional_call(meta_model, parameters, (val.features, val.task_index))

    base, slope = jvp(output, (theta,), (delta,))
    probe = copy.deepcopy(meta_model)
    rows = []
    for scale in scales:
        with torch.no_grad():
            for name, parameter in probe.named_parameters():
                parameter.copy_(theta[name] + scale * delta[name])
            network = probe(val.features, val.task_index)
        linear = base + scale * slope
        network_losses = example_losses(network, val.labels, regression)
        linear_losses = example_losses(linear.detach(), val.labels, regression)
        for index in task_indices.tolist():
            mask = val.task_index == index
            loss_network = network_losses[mask].mean()
            loss_linear = linear_losses[mask].mean()
            rows.append(
                {
                    "subset_id": subset_id,
                    "task": data.task_names[index],
                    "scale": float(scale),
                    "relative_shift": float(scale * delta_norm / theta_norm),
                    "loss_network": float(loss_network),
                    "loss_first_order": float(loss_linear),
                    "relative_error": float((loss_linear - loss_network).abs() / loss_network),
                }
            )
    return pd.DataFrame(rows)
