"""Seeded random projections of per-example gradients (Johnson-Lindenstrauss).

A projector maps an example's parameter gradient g(x) in R^p to z(x) = P^T g(x) in R^d with
E[P P^T] = I, so inner products of gradients are preserved in expectation. P is never held
whole: it is regenerated from its seed, one block at a time, whenever it is needed.

- :class:`DenseProjector`: P has i.i.d. entries (Rademacher +-1/sqrt(d) or Gaussian
  N(0, 1/d)), generated in blocks of parameter rows.
- :class:`KroneckerProjector`: for each linear layer, P = P_out (x) P_in, so the projection
  of the layer's gradient delta [a; 1]^T is (P_out^T delta) (x) (P_in^T [a; 1]): two small
  products instead of one with a p-row matrix. A factor no larger than ``factor_dim`` is
  kept as it is (identity), so small layers are represented exactly.

Both satisfy the :class:`Projector` protocol, so callers never ask which one they hold:
:func:`make_projector` builds one from :class:`ProjectionSettings`, ``describe()`` gives the
settings back as a dict, and :func:`from_description` rebuilds an equal projector from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch

from taskgroup.estimate.gradients import (
    LayerFactors,
    layer_factors,
    layer_shapes,
    per_example_gradients,
)
from taskgroup.estimate.settings import KINDS, ProjectionSettings
from taskgroup.models.network import MultiHeadNet
from taskgroup.seeding import derived_seed


@runtime_checkable
class Projector(Protocol):
    """A seeded random projection P of a model's parameter gradients (p -> ``dim``)."""

    dim: int

    def to(self, device) -> Projector:
        """The projector with its matrices on ``device`` (in place; returns itself)."""

    def project(
        self, model: MultiHeadNet, features: torch.Tensor, task_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected gradients z = P^T grad f(x; theta) (n, dim) and outputs f(x; theta) (n,)
        of n examples ``features`` (n, n_features), ``task_index`` (n,) int64, at ``model``'s
        parameters (eval mode, no parameter is changed)."""

    def shift_norms(self, weights: torch.Tensor) -> torch.Tensor:
        """||P w|| (s,) for s projected shifts ``weights`` (s, dim)."""

    def describe(self) -> dict:
        """The settings that rebuild this projector for the same model (see
        :meth:`ProjectionSettings.description` and :func:`from_description`)."""


def random_matrix(rows: int, cols: int, kind: str, seed: int) -> torch.Tensor:
    """A (rows, cols) float32 matrix with i.i.d. entries of variance 1/cols, from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "rademacher":
        signs = torch.randint(0, 2, (rows, cols), generator=generator, dtype=torch.int8)
        return (signs.float() * 2.0 - 1.0) / math.sqrt(cols)
    if kind == "gaussian":
        return torch.randn(rows, cols, generator=generator) / math.sqrt(cols)
    raise ValueError(f"projection.kind = {kind!r}; expected one of {KINDS}")


class KroneckerProjector:
    """Per-layer Kronecker-factored projection of linear-layer gradients.

    layer_shapes: (out, in + 1) per linear layer, heads last (see
    :func:`taskgroup.estimate.gradients.layer_shapes`); the model given to :meth:`project`
    must have these layers.
    """

    def __init__(self, layer_shapes, factor_dim: int, kind: str, seed: int):
        self.layer_shapes = [tuple(shape) for shape in layer_shapes]
        self.factor_dim, self.kind, self.seed = factor_dim, kind, seed
        self.left, self.right = [], []
        for index, (out, inputs) in enumerate(self.layer_shapes):
            self.left.append(self._factor(out, (index, 0)))
            self.right.append(self._factor(inputs, (index, 1)))
        self.segment_shapes = [
            (out if left is None else left.shape[1], inputs if right is None else right.shape[1])
            for (out, inputs), left, right in zip(self.layer_shapes, self.left, self.right)
        ]
        self.dim = sum(a * b for a, b in self.segment_shapes)

    def _factor(self, size: int, position: tuple[int, int]) -> torch.Tensor | None:
        if size <= self.factor_dim:
            return None
        return random_matrix(size, self.factor_dim, self.kind, derived_seed(self.seed, *position))

    def to(self, device) -> "KroneckerProjector":
        self.left = [None if m is None else m.to(device) for m in self.left]
        self.right = [None if m is None else m.to(device) for m in self.right]
        return self

    def project(
        self, model: MultiHeadNet, features: torch.Tensor, task_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`Projector.project`: one forward and one backward pass for the layer
        factors of the batch, then :meth:`project_factors`."""
        outputs, factors = layer_factors(model, features, task_index)
        return self.project_factors(task_index, factors), outputs

    def project_factors(
        self, task_index: torch.Tensor, factors: list[LayerFactors]
    ) -> torch.Tensor:
        """z (n, dim) from the gradient factors of n examples."""
        parts = []
        last = len(factors) - 1
        for index, (factor, left, right) in enumerate(zip(factors, self.left, self.right)):
            if index == last:  # heads: delta is the one-hot vector of the example's task
                n_tasks = self.layer_shapes[index][0]
                rows = (
                    torch.nn.functional.one_hot(task_index, n_tasks).to(factor.inputs.dtype)
                    if left is None
                    else left[task_index]
                )
            else:
                rows = factor.deltas if left is None else factor.deltas @ left
            columns = factor.inputs if right is None else factor.inputs @ right
            parts.append((rows.unsqueeze(2) * columns.unsqueeze(1)).flatten(1))
        return torch.cat(parts, dim=1)

    def shift_norms(self, weights: torch.Tensor) -> torch.Tensor:
        """||P w|| (s,) for s projected shifts ``weights`` (s, dim), without forming P w."""
        squared = torch.zeros(weights.shape[0], dtype=weights.dtype, device=weights.device)
        start = 0
        for (rows, cols), left, right in zip(self.segment_shapes, self.left, self.right):
            block = weights[:, start : start + rows * cols].reshape(-1, rows, cols)
            start += rows * cols
            # ||L w R^T||_F^2 = <w, (L^T L) w (R^T R)>
            gram = block if left is None else (left.T @ left).to(block.dtype) @ block
            gram = gram if right is None else gram @ (right.T @ right).to(block.dtype)
            squared += (block * gram).sum(dim=(1, 2))
        return squared.clamp(min=0).sqrt()

    def describe(self) -> dict:
        return ProjectionSettings(
            "kronecker", self.kind, self.seed, factor_dim=self.factor_dim, dim=None
        ).description()

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, KroneckerProjector)
            and self.describe() == other.describe()
            and self.layer_shapes == other.layer_shapes
        )

    __hash__ = None


class DenseProjector:
    """Dense i.i.d. projection of flattened per-example gradients, regenerated in blocks.

    parameter_sizes: number of entries of each parameter tensor, in model order.
    block_rows: parameter rows per generated block (memory: block_rows x dim floats).
    """

    def __init__(self, parameter_sizes, dim: int, kind: str, seed: int, block_rows: int = 8192):
        self.parameter_sizes = list(parameter_sizes)
        self.dim, self.kind, self.seed, self.block_rows = dim, kind, seed, block_rows
        self.device = torch.device("cpu")

    def to(self, device) -> "DenseProjector":
        self.device = torch.device(device)
        return self

    def blocks(self):
        """(parameter index, row slice, block matrix) for every block of P, in order."""
        for index, size in enumerate(self.parameter_sizes):
            for number, start in enumerate(range(0, size, self.block_rows)):
                stop = min(start + self.block_rows, size)
                seed = derived_seed(self.seed, index, number)
                matrix = random_matrix(stop - start, self.dim, self.kind, seed)
                yield index, slice(start, stop), matrix.to(self.device)

    def project(
        self, model: MultiHeadNet, features: torch.Tensor, task_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`Projector.project`: the full per-example gradients of the batch, then
        :meth:`project_gradients`."""
        gradients = per_example_gradients(model, features, task_index)
        projected = self.project_gradients(
            [gradients[name] for name, _ in model.named_parameters()]
        )
        with torch.no_grad():
            outputs = model(features, task_index)
        return projected, outputs

    def project_gradients(self, gradients: list[torch.Tensor]) -> torch.Tensor:
        """z (n, dim) from per-example gradients, one (n, ...) tensor per parameter."""
        flat = [g.flatten(1) for g in gradients]
        projected = torch.zeros(flat[0].shape[0], self.dim, device=flat[0].device)
        for index, rows, matrix in self.blocks():
            projected += flat[index][:, rows] @ matrix
        return projected

    def shift_norms(self, weights: torch.Tensor) -> torch.Tensor:
        """||P w|| (s,) for s projected shifts ``weights`` (s, dim)."""
        squared = torch.zeros(weights.shape[0], dtype=weights.dtype, device=weights.device)
        for _, _, matrix in self.blocks():
            squared += ((weights @ matrix.T.to(weights.dtype)) ** 2).sum(dim=1)
        return squared.sqrt()

    def describe(self) -> dict:
        return ProjectionSettings(
            "dense", self.kind, self.seed, factor_dim=None, dim=self.dim
        ).description()

    def __eq__(self, other) -> bool:
        # block_rows only sets the memory of a block, not P: it is not compared.
        return (
            isinstance(other, DenseProjector)
            and self.describe() == other.describe()
            and self.parameter_sizes == other.parameter_sizes
        )

    __hash__ = None


def make_projector(model: MultiHeadNet, settings: ProjectionSettings) -> Projector:
    """The projector of ``settings`` for ``model``'s parameters (on the CPU)."""
    if settings.structure == "kronecker":
        return KroneckerProjector(
            layer_shapes(model), settings.factor_dim, settings.kind, settings.seed
        )
    return DenseProjector(
        [p.numel() for p in model.parameters()], settings.dim, settings.kind, settings.seed
    )


def from_description(model: MultiHeadNet, description: Mapping) -> Projector:
    """The projector that ``describe()`` described, rebuilt for ``model`` (equal to the
    original when ``model`` has the same parameter shapes). ``description`` may hold more
    keys (a projection table row): see :meth:`ProjectionSettings.from_mapping`."""
    return make_projector(model, ProjectionSettings.from_mapping(description))


def parameter_norm(model: MultiHeadNet) -> float:
    """||theta|| of all of ``model``'s parameters, flattened into one vector."""
    return float(torch.cat([p.detach().flatten() for p in model.parameters()]).norm())


def project_examples(
    model: MultiHeadNet, projector: Projector, features: torch.Tensor, task_index: torch.Tensor,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected gradients z (n, dim) and outputs f(x; theta) (n,) of n examples, in
    batches of ``batch_size`` examples (which sets the peak memory)."""
    projected, outputs = [], []
    for start in range(0, features.shape[0], batch_size):
        z, output = projector.project(
            model, features[start : start + batch_size], task_index[start : start + batch_size]
        )
        projected.append(z)
        outputs.append(output)
    return torch.cat(projected), torch.cat(outputs)
