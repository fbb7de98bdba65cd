"""The multi-head network: a shared MLP trunk and one linear output head per task."""

from __future__ import annotations

import math

import torch
from torch import nn

from taskgroup.data.tables import UnreadableFileError, regenerate_hint


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


class AlignedNet(nn.Module):
    """A :class:`MultiHeadNet` with one alignment matrix per task before the trunk:
    output = base(x R_task(x), task). ``alignment`` has shape (n_tasks, p, p)."""

    def __init__(self, base: MultiHeadNet):
        super().__init__()
        self.base = base
        n_tasks, n_features = base.config["n_tasks"], base.config["n_features"]
        eye = torch.eye(n_features, device=base.head_weight.device)
        self.alignment = nn.Parameter(eye.expand(n_tasks, n_features, n_features).clone())
        self.config = {**base.config, "aligned": True}

    @property
    def trunk(self) -> nn.Module:
        return self.base.trunk

    @property
    def head_weight(self) -> nn.Parameter:
        return self.base.head_weight

    @property
    def head_bias(self) -> nn.Parameter:
        return self.base.head_bias

    def align(self, features: torch.Tensor, task_index: torch.Tensor) -> torch.Tensor:
        """The aligned inputs x R_task(x), (n, p); one matrix product per task present."""
        aligned = torch.empty_like(features)
        for task in torch.unique(task_index).tolist():
            rows = task_index == task
            aligned[rows] = features[rows] @ self.alignment[task]
        return aligned

    def forward(self, features: torch.Tensor, task_index: torch.Tensor) -> torch.Tensor:
        return self.base(self.align(features, task_index), task_index)


def save_checkpoint(model: MultiHeadNet, task_names: list[str], path) -> None:
    """Save weights, architecture and task order, so the checkpoint is self-describing."""
    torch.save(
        {"config": model.config, "task_names": task_names, "state_dict": model.state_dict()},
        path,
    )


def load_checkpoint(path, task_names: list[str]) -> MultiHeadNet:
    """Load a checkpoint, checking that it was trained on ``task_names`` in that order (an
    :class:`AlignedNet` when it was trained with covariance alignment).

    Raises FileNotFoundError if it is missing, :class:`UnreadableFileError` naming the path
    and the ``snakemake --forcerun`` that rewrites it if torch cannot load it (damaged, cut
    short, or holding more than weights), ValueError if its tasks differ."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # RuntimeError (PytorchStreamReader), UnpicklingError, EOFError
        cause = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UnreadableFileError(
            f"{path}: not a readable model checkpoint ({type(error).__name__}: {cause}); "
            + regenerate_hint(path)
        ) from None
    if payload["task_names"] != task_names:
        raise ValueError(
            f"{path}: checkpoint was trained on tasks {payload['task_names'][:5]}..., "
            f"the dataset has {task_names[:5]}... (rerun train_meta_init)"
        )
    config = dict(payload["config"])
    model = MultiHeadNet(**{key: value for key, value in config.items() if key != "aligned"})
    if config.get("aligned"):  # trained with covariance alignment (taskgroup.models.alignment)
        model = AlignedNet(model)
    model.load_state_dict(payload["state_dict"])
    return model
