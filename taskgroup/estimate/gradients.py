"""Per-example gradients of a multi-head network's output at fixed parameters.

Two ways, same mathematics: the gradient of the output f(x; theta) of example x's own task
head with respect to every parameter, taken in eval mode. The output is a logit for a
binary task and the prediction for a regression task; no loss enters the gradient, so both
task types share this code (the loss only enters the per-subset fit in
:mod:`taskgroup.estimate.linearized`).

- :func:`per_example_gradients` uses ``torch.func`` (vmap over grad) and returns the full
  per-example gradient of every parameter tensor: general, costs memory n x p.
- :func:`layer_factors` uses that every parameter here belongs to a linear layer: for a layer
  s = W a + b, the per-example gradient of f with respect to [W, b] is the outer product
  delta(x) [a(x); 1]^T, where a(x) is the layer's input and delta(x) = df/ds. One forward
  and one backward pass over a batch give both factors of every example, without forming
  any p-sized vector. The heads form one linear layer from the trunk's last width to k
  outputs, of which example x reads only output t(x): its delta is the one-hot e_t(x).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from taskgroup.models.network import MultiHeadNet


def per_example_gradients(
    model: MultiHeadNet, features: torch.Tensor, task_index: torch.Tensor
) -> dict[str, torch.Tensor]:
    """d f(x_n; theta) / d theta for each example: name -> (n, *parameter shape)."""
    model.eval()
    params = {name: value.detach() for name, value in model.named_parameters()}

    def output(parameters, x, t):
        return functional_call(model, parameters, (x.unsqueeze(0), t.unsqueeze(0))).squeeze(0)

    return vmap(grad(output), in_dims=(None, 0, 0))(params, features, task_index)


@dataclass
class LayerFactors:
    """The two factors of one linear layer's per-example gradients, for n examples.

    inputs: (n, in + 1), the layer input with a trailing 1 (for the bias).
    deltas: (n, out), df/ds for the layer's pre-activation s; None for the head layer,
        whose delta is the one-hot vector of each example's task (see ``task_index``).
    """

    inputs: torch.Tensor
    deltas: torch.Tensor | None


def trunk_linears(model: MultiHeadNet) -> list[nn.Linear]:
    return [layer for layer in model.trunk if isinstance(layer, nn.Linear)]


def layer_shapes(model: MultiHeadNet) -> list[tuple[int, int]]:
    """(out, in + 1) of every linear layer, trunk first, heads last."""
    shapes = [(layer.out_features, layer.in_features + 1) for layer in trunk_linears(model)]
    n_tasks, width = model.head_weight.shape
    return shapes + [(n_tasks, width + 1)]


def layer_parameters(model: MultiHeadNet) -> list[torch.Tensor]:
    """[W, b] of every linear layer as (out, in + 1) matrices, in :func:`layer_shapes` order."""
    matrices = [
        torch.cat([layer.weight, layer.bias.unsqueeze(1)], dim=1) for layer in trunk_linears(model)
    ]
    return matrices + [torch.cat([model.head_weight, model.head_bias.unsqueeze(1)], dim=1)]


def layer_factors(
    model: MultiHeadNet, features: torch.Tensor, task_index: torch.Tensor
) -> tuple[torch.Tensor, list[LayerFactors]]:
    """Outputs f(x) (n,) and the gradient factors of every linear layer (eval mode)."""
    model.eval()
    pre_activations, inputs = [], []
    hidden = features
    with torch.enable_grad():
        for layer in model.trunk:
            if isinstance(layer, nn.Linear):
                inputs.append(hidden)
                hidden = layer(hidden)
                hidden.retain_grad()
                pre_activations.append(hidden)
            else:
                hidden = layer(hidden)
        inputs.append(hidden)
        outputs = (hidden * model.head_weight[task_index]).sum(-1) + model.head_bias[task_index]
        deltas = torch.autograd.grad(outputs.sum(), pre_activations) if pre_activations else ()
    ones = torch.ones(features.shape[0], 1, dtype=features.dtype, device=features.device)
    factors = [
        LayerFactors(torch.cat([a.detach(), ones], dim=1), d.detach())
        for a, d in zip(inputs[:-1], deltas)
    ]
    factors.append(LayerFactors(torch.cat([inputs[-1].detach(), ones], dim=1), None))
    return outputs.detach(), factors
