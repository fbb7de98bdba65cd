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
"""

from __future__ import annotations

import math

import torch

from taskgroup.estimate.gradients import (
    LayerFactors,
    layer_factors,
    layer_shapes,
    per_example_gradients,
)
from taskgroup.seeding import derived_seed

KINDS = ("rademacher", "gaussian")
STRUCTURES = ("kronecker", "dense")


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
    :func:`taskgroup.estimate.gradients.layer_shapes`).
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

    def project(self, task_index: torch.Tensor, factors: list[LayerFactors]) -> torch.Tensor:
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

    def project(self, gradients: list[torch.Tensor]) -> torch.Tensor:
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


def make_projector(model, structure: str, dim: int, factor_dim: int, kind: str, seed: int):
    """The projector of ``structure`` for ``model``'s parameters."""
    if structure == "kronecker":
        return KroneckerProjector(layer_shapes(model), factor_dim, kind, seed)
    if structure == "dense":
        return DenseProjector([p.numel() for p in model.parameters()], dim, kind, seed)
    raise ValueError(f"projection.structure = {structure!r}; expected one of {STRUCTURES}")


def project_examples(
    model, projector, features: torch.Tensor, task_index: torch.Tensor, batch_size: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected gradients z (n, dim) and outputs f(x; theta) (n,) of n examples, in
    batches of ``batch_size`` (eval mode, no parameter is changed)."""
    projected, outputs = [], []
    for start in range(0, features.shape[0], batch_size):
        x = features[start : start + batch_size]
        t = task_index[start : start + batch_size]
        if isinstance(projector, KroneckerProjector):
            output, factors = layer_factors(model, x, t)
            projected.append(projector.project(t, factors))
        else:
            gradients = per_example_gradients(model, x, t)
            projected.append(projector.project([gradients[n] for n, _ in model.named_parameters()]))
            with torch.no_grad():
                output = model(x, t)
        outputs.append(output)
    return torch.cat(projected), torch.cat(outputs)
