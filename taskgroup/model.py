"""The multi-head network: a shared MLP trunk and one linear output head per task."""

from __future__ import annotations

import math

import torch
from torch import nn


class MultiHeadNet(nn.Module):
    """Shared trunk (Linear + ReLU layers of ``hidden_sizes``) and ``n_tasks`` linear heads.

    The heads are stored as one (n_tasks, width) weight matrix and an (n_tasks,) bias, so a
    batch mixing tasks is one gather instead of a loop over heads.
    """

    def __init__(self, n_features: int, n_tasks: int, hidden_sizes: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.trunk = nn.Sequential(*layers)
        bound = 1.0 / math.sqrt(width)
        self.head_weight = nn.Parameter(torch.empty(n_tasks, width).uniform_(-bound, bound))
        self.head_bias = nn.Parameter(torch.zeros(n_tasks))
        self.config = {
            "n_features": n_features,
            "n_tasks": n_tasks,
            "hidden_sizes": list(hidden_sizes),
        }

    def forward(self, features: torch.Tensor, task_index: torch.Tensor) -> torch.Tensor:
        """Logits (n,) of each example's own task head; features (n, p), task_index (n,)."""
        hidden = self.trunk(features)
        return (hidden * self.head_weight[task_index]).sum(dim=-1) + self.head_bias[task_index]


def save_checkpoint(model: MultiHeadNet, task_names: list[str], path) -> None:
    """Save weights, architecture and task order, so the checkpoint is self-describing."""
    torch.save(
        {"config": model.config, "task_names": task_names, "state_dict": model.state_dict()},
        path,
    )


def load_checkpoint(path, task_names: list[str]) -> MultiHeadNet:
    """Load a checkpoint, checking that it was trained on ``task_names`` in that order (an
    :class:`taskgroup.alignment.AlignedNet` when it was trained with covariance alignment)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload["task_names"] != task_names:
        raise ValueError(
            f"{path}: checkpoint was trained on tasks {payload['task_names'][:5]}..., "
            f"the dataset has {task_names[:5]}... (rerun train_meta_init)"
        )
    config = dict(payload["config"])
    model = MultiHeadNet(**{key: value for key, value in config.items() if key != "aligned"})
    if config.get("aligned"):  # trained with covariance alignment (taskgroup.alignment)
        from taskgroup.alignment import AlignedNet

        model = AlignedNet(model)
    model.load_state_dict(payload["state_dict"])
    return model
