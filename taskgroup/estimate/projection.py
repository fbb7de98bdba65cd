"""Projections of per-example gradients: seeded random ones (Johnson-Lindenstrauss) and one
fitted to the data.

A projector maps an example's parameter gradient g(x) in R^p to z(x) = P^T g(x) in R^d with
E[P P^T] = I, so inner products of gradients are preserved in expectation. Every parameter
here belongs to a linear layer, whose per-example gradient is the outer product
delta(x) [a(x); 1]^T (:func:`taskgroup.estimate.gradients.layer_factors`), so P is
block-diagonal over the layers and each layer's block is applied to that layer's outer
products only.

The size d (``ProjectionSettings.dim``) is a setting, whatever the widths and k:

- A model with at most d parameters is kept exactly (P = I, d = p): no projection error.
- Otherwise d is shared among the layers by :func:`taskgroup.resources.allocate_columns`,
  in proportion to their parameters. The task heads form one k x (width + 1) layer whose
  example gradient is e_t(x) [a; 1]^T; its block is I_k (x) R (R: (width + 1) x b), so a
  head's projected coordinates are its own: a shift of task t's head moves task t's
  outputs only, as in the network. Every task keeps at least one head column.

Each trunk layer's block (and the heads' R) is built by the structure:

- "dense": i.i.d. entries (Rademacher +-1/sqrt(c) or Gaussian N(0, 1/c) for c columns),
  regenerated from the seed in blocks of rows whenever it is needed.
- "kronecker": R_out (x) R_in with factors sized so that their product fits the layer's
  columns; the projection of delta [a; 1]^T is (R_out^T delta) (x) (R_in^T [a; 1]), two
  small products instead of one with a p-row matrix.
- "sparse": a sparse JL transform: every parameter row of P has ``nonzeros`` entries of
  +-1/sqrt(nonzeros) (or N(0, 1/nonzeros)) in distinct columns, one in each of ``nonzeros``
  column blocks: the cost per example is p x nonzeros, whatever d.
- "eigen": not random but fitted to the data, the Kronecker structure with orthonormal
  factors: U_out (x) U_in, U_out the top eigenvectors of the second moment of the layer's
  deltas over the training examples and U_in those of its inputs [a; 1] (the heads' R:
  those of the heads' inputs). These are the directions the per-example gradients
  delta [a; 1]^T vary most along, if deltas and inputs are independent (the Kronecker
  factorization of K-FAC). :meth:`LayerProjector.fit` computes them in one pass over the
  examples; P^T P = I, so ||P w|| = ||w|| needs no factor, and a projector rebuilt from
  its description can say ||P w|| but not project.
- "energy": the eigenvectors of "eigen" (all of them, up to d per side), but instead of a
  grid of the top ones in each layer, the d products u_i (x) v_j over all layers (the
  heads: a head's own input directions, e_t (x) v_j) whose coordinate of the per-example
  gradients has the largest second moment over the training examples,
  sum_x (u_i^T delta)^2 (v_j^T [a; 1])^2. Where deltas and inputs are independent this
  moment is the product of the two eigenvalues and the grid keeps the top products; on
  real gradients they are not, and the measured moment picks the coordinates the
  gradients actually use, shared among the layers and the tasks' heads by what they
  carry instead of by their sizes. The products are orthonormal, so ||P w|| = ||w||; the
  fit takes one more pass over the training examples' factors than "eigen" (the kept
  ones, or a second pass over the examples), to measure the moments.

The preconditioner (``ProjectionSettings.preconditioner``) sets the geometry of the shifts.
The real fine-tuning uses Adam, whose step moves a parameter by about lr g / sqrt(v), v the
running mean of its squared gradient: a step of plain gradient descent in the coordinates
u = D^(1/2) theta, D = diag(sqrt(v)). With "adam" the gradients are taken in those
coordinates, g -> D^(-1/2) g, so the linearized fit's ridge penalty ||w||^2 is Adam's metric,
not the Euclidean one. v is the mean over the training examples of the squared loss gradient
at the meta-initialization, (l'(x) delta_i(x) [a; 1]_j(x))^2 for a layer's entry (i, j),
taken in its rank-1 factored form v_ij ~ R_i C_j / S (the row sums R, the column sums C and
their total S, as Adafactor does), so the scaling stays a product of one scale per delta
entry and one per input entry: delta [a; 1]^T -> (r * delta) (c * [a; 1])^T with
r = S^(1/4) R^(-1/4), c = C^(-1/4), and each block projects the scaled factors. (An entry
of zero scale, a unit no example moves, gets scale 0.) :meth:`LayerProjector.fit` computes
the scales in the same pass as the "eigen" moments; shift norms and the parameter norm
(:meth:`LayerProjector.parameter_norm`) are then measured in u.

All satisfy the :class:`Projector` protocol (one class, :class:`LayerProjector`), so callers
never ask which one they hold: :func:`make_projector` builds one from
:class:`ProjectionSettings`, ``describe()`` gives the settings back as a dict, and
:func:`from_description` rebuilds an equal projector from it. A projector whose
``needs_fit`` is true ("eigen", or preconditioner "adam") is fitted before it projects
(:func:`taskgroup.estimate.valuers.project_data` does it on the training examples).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch

from taskgroup.data.examples import SplitTensors
from taskgroup.estimate.gradients import (
    LayerFactors,
    layer_factors,
    layer_parameters,
    layer_shapes,
)
from taskgroup.estimate.linearized import loss_derivatives
from taskgroup.estimate.settings import KINDS, ProjectionSettings
from taskgroup.estimate.symmetric import row_gram, top_eigenpairs
from taskgroup.models.network import MultiHeadNet
from taskgroup.resources import allocate_columns
from taskgroup.seeding import derived_seed

# Parameter rows of a dense block generated at a time (memory: rows x columns floats).
BLOCK_ROWS = 8192


@runtime_checkable
class Projector(Protocol):
    """A projection P of a model's parameter gradients (p -> ``dim``): seeded random, or
    fitted to the examples' gradients (``needs_fit``)."""

    dim: int
    needs_fit: bool
    # P = I: every parameter kept, each coordinate one parameter
    exact: bool

    def to(self, device) -> Projector:
        """The projector with its matrices on ``device`` (in place; returns itself)."""

    def project(
        self, model: MultiHeadNet, features: torch.Tensor, task_index: torch.Tensor,
        out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected gradients z = P^T grad f(x; theta) (n, dim) and outputs f(x; theta) (n,)
        of n examples ``features`` (n, n_features), ``task_index`` (n,) int64, at ``model``'s
        parameters (eval mode, no parameter is changed); z is written into ``out`` (n, dim)
        when given."""

    def shift_norms(self, weights: torch.Tensor) -> torch.Tensor:
        """||P w|| (s,) for s projected shifts ``weights`` (s, dim), in the preconditioner's
        metric."""

    def parameter_norm(self, model: MultiHeadNet) -> float:
        """||theta|| of ``model``'s parameters in the same metric as :meth:`shift_norms`."""

    def fit(self, model: MultiHeadNet, examples: SplitTensors, batch_size: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fit what is learned from the data (when ``needs_fit``) on these n examples and
        return their projected gradients (n, dim) and outputs (n,), as
        :func:`project_examples` gives them with the fitted projection."""

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


def sparse_pattern(rows: int, cols: int, nonzeros: int, kind: str, seed: int):
    """The nonzeros of a (rows, cols) sparse JL matrix: column indices (rows, s) and values
    (rows, s) float32, s = min(nonzeros, cols). The columns are cut into s blocks and every
    row has one entry in each block (so a row's columns are distinct); values are
    +-1/sqrt(s) (rademacher) or N(0, 1/s) (gaussian), so every row has expected norm 1."""
    s = min(nonzeros, cols)
    generator = torch.Generator().manual_seed(seed)
    bounds = [cols * j // s for j in range(s + 1)]
    widths = torch.tensor([bounds[j + 1] - bounds[j] for j in range(s)])
    offsets = torch.tensor(bounds[:-1])
    within = (torch.rand(rows, s, generator=generator, dtype=torch.float64) * widths).long()
    columns = offsets + within.clamp(max=widths - 1)
    return columns, random_matrix(rows, s, kind, derived_seed(seed, 1))


def _outer(factor: LayerFactors) -> torch.Tensor:
    """The per-example gradients delta [a; 1]^T of a trunk layer, flattened (n, out x in)."""
    return (factor.deltas.unsqueeze(2) * factor.inputs.unsqueeze(1)).flatten(1)


class _Identity:
    """A block of ``shape`` (out, in + 1) kept exactly."""

    def __init__(self, shape: tuple[int, int]):
        self.shape, self.columns = shape, shape[0] * shape[1]

    def to(self, device):
        return self

    def apply(self, flat: torch.Tensor) -> torch.Tensor:
        return flat

    def squared_norms(self, block: torch.Tensor) -> torch.Tensor:
        block = block.reshape(-1, *self.shape)
        return (block * block).sum(dim=(1, 2))


class _Dense:
    """A (rows, columns) i.i.d. block, regenerated from its seed BLOCK_ROWS rows at a time."""

    def __init__(self, rows: int, columns: int, kind: str, seed: int):
        self.rows, self.columns, self.kind, self.seed = rows, columns, kind, seed
        self.device = torch.device("cpu")

    def to(self, device):
        self.device = torch.device(device)
        return self

    def blocks(self):
        for number, start in enumerate(range(0, self.rows, BLOCK_ROWS)):
            stop = min(start + BLOCK_ROWS, self.rows)
            matrix = random_matrix(
                stop - start, self.columns, self.kind, derived_seed(self.seed, number)
            )
            yield slice(start, stop), matrix.to(self.device)

    def apply(self, flat: torch.Tensor) -> torch.Tensor:
        projected = torch.zeros(flat.shape[0], self.columns, device=flat.device)
        for rows, matrix in self.blocks():
            projected += flat[:, rows] @ matrix
        return projected

    def squared_norms(self, block: torch.Tensor) -> torch.Tensor:
        squared = torch.zeros(block.shape[0], dtype=block.dtype, device=block.device)
        for _, matrix in self.blocks():
            squared += ((block @ matrix.T.to(block.dtype)) ** 2).sum(dim=1)
        return squared


class _Matrix:
    """A small block held whole as a (rows, columns) float32 matrix."""

    def __init__(self, matrix: torch.Tensor):
        self.matrix, self.columns = matrix, matrix.shape[1]

    def to(self, device):
        self.matrix = self.matrix.to(device)
        return self

    def apply(self, flat: torch.Tensor) -> torch.Tensor:
        return flat @ self.matrix

    def squared_norms(self, block: torch.Tensor) -> torch.Tensor:
        return ((block @ self.matrix.T.to(block.dtype)) ** 2).sum(dim=1)


class _Sparse:
    """A (rows, columns) sparse JL block (see :func:`sparse_pattern`), held as CSR."""

    def __init__(self, rows: int, columns: int, nonzeros: int, kind: str, seed: int):
        self.columns = columns
        indices, values = sparse_pattern(rows, columns, nonzeros, kind, seed)
        row_index = torch.arange(rows).repeat_interleave(indices.shape[1])
        with warnings.catch_warnings():  # torch's notes that CSR support is in beta
            warnings.simplefilter("ignore", UserWarning)
            coo = torch.sparse_coo_tensor(
                torch.stack([row_index, indices.flatten()]), values.flatten(), (rows, columns),
                check_invariants=True,
            ).coalesce()
            self.matrix = coo.to_sparse_csr()  # (rows, columns): P w
            self.transposed = coo.t().coalesce().to_sparse_csr()  # (columns, rows): P^T g

    def to(self, device):
        self.matrix, self.transposed = self.matrix.to(device), self.transposed.to(device)
        return self

    def apply(self, flat: torch.Tensor) -> torch.Tensor:
        return (self.transposed @ flat.T).T

    def squared_norms(self, block: torch.Tensor) -> torch.Tensor:
        shifted = self.matrix.to(block.dtype) @ block.T  # (rows, s)
        return (shifted * shifted).sum(dim=0)


def kronecker_shape(out: int, inputs: int, columns: int) -> tuple[int, int]:
    """The factor sizes (left <= out, right <= inputs) of a Kronecker block for a layer
    (out, inputs) in at most ``columns`` columns: about the layer's aspect ratio, then
    each side as large as the other leaves room for."""
    left = min(out, max(1, round(math.sqrt(columns * out / inputs))))
    right = min(inputs, max(1, columns // left))
    left = min(out, max(1, columns // right))
    return left, right


class _Kronecker:
    """R_out (x) R_in for a layer (out, inputs) fitted into ``columns`` columns; a factor as
    large as its side is the identity (None)."""

    def __init__(self, out: int, inputs: int, columns: int, kind: str, seed: int):
        left, right = kronecker_shape(out, inputs, columns)
        self.shape = (left, right)
        self.columns = left * right
        self.left = None if left == out else random_matrix(
            out, left, kind, derived_seed(seed, 0)
        )
        self.right = None if right == inputs else random_matrix(
            inputs, right, kind, derived_seed(seed, 1)
        )

    def to(self, device):
        self.left = None if self.left is None else self.left.to(device)
        self.right = None if self.right is None else self.right.to(device)
        return self

    def apply_factors(self, factor: LayerFactors, out: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """(R_out^T delta) (x) (R_in^T [a; 1]) (n, columns), written into ``out`` (a
        (n, columns) view whose last dimension is contiguous) when given."""
        rows = factor.deltas if self.left is None else factor.deltas @ self.left
        columns = factor.inputs if self.right is None else factor.inputs @ self.right
        if out is None:
            return (rows.unsqueeze(2) * columns.unsqueeze(1)).flatten(1)
        torch.mul(rows.unsqueeze(2), columns.unsqueeze(1), out=out.view(-1, *self.shape))
        return out

    def squared_norms(self, block: torch.Tensor) -> torch.Tensor:
        block = block.reshape(-1, *self.shape)
        # ||L w R^T||_F^2 = <w, (L^T L) w (R^T R)>
        gram = block if self.left is None else (self.left.T @ self.left).to(block.dtype) @ block
        if self.right is not None:
            gram = gram @ (self.right.T @ self.right).to(block.dtype)
        return (block * gram).sum(dim=(1, 2))


EIGEN_NOT_FITTED = ("projection structure eigen: the basis was not fitted to the examples "
                    "(LayerProjector.fit) before projecting")


def top_eigenvectors(moment: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` eigenvectors of the symmetric ``moment`` (m, m) of largest eigenvalue,
    as float32 columns (m, count), largest first, each signed so that its entry of largest
    magnitude is positive (so that the basis is a function of the moment alone).

    A unit that is off on every example has a zero row and column: the eigenvectors of
    positive eigenvalue are those of the other units' block, which is decomposed alone
    (a ReLU trunk has many such units, and the decomposition costs the cube of its size);
    past that block's size, the vectors are the off units' unit vectors, in order. Only
    the ``count`` vectors are computed (:func:`top_eigenpairs`). In float64: torch 2.13's
    float32 solver, twice as fast, fails to converge on some moments
    with a large zero block, and whether it does depends on the thread count."""
    size = moment.shape[0]
    live = torch.nonzero((moment != 0).any(dim=1)).squeeze(1)
    taken = min(count, len(live))
    _, block = top_eigenpairs(moment[live][:, live], count=taken)
    vectors = torch.zeros(size, count, dtype=torch.float64, device=moment.device)
    vectors[live, :taken] = block.to(moment.device).flip(1)
    off = torch.ones(size, dtype=torch.bool, device=moment.device)
    off[live] = False
    rest = torch.nonzero(off).squeeze(1)[: count - taken]
    vectors[rest, taken + torch.arange(len(rest), device=moment.device)] = 1.0
    signs = torch.sign(vectors.gather(0, vectors.abs().argmax(dim=0, keepdim=True)))
    return (vectors * signs).float()


class _KroneckerEigen(_Kronecker):
    """U_out (x) U_in for a layer (out, inputs) fitted into ``columns`` columns: the top
    eigenvectors of the second moments of its deltas and of its inputs (:meth:`fit`); a
    factor as large as its side is the identity (None)."""

    def __init__(self, out: int, inputs: int, columns: int):
        left, right = kronecker_shape(out, inputs, columns)
        self.shape, self.columns = (left, right), left * right
        self.sides = (out, inputs)
        self.left = self.right = None
        self.fitted = left == out and right == inputs

    def fit(self, delta_moment: torch.Tensor, input_moment: torch.Tensor) -> None:
        (left, right), (out, inputs) = self.shape, self.sides
        self.left = None if left == out else top_eigenvectors(delta_moment, left)
        self.right = None if right == inputs else top_eigenvectors(input_moment, right)
        self.fitted = True

    def apply_factors(self, factor: LayerFactors, out: torch.Tensor | None = None
                      ) -> torch.Tensor:
        if not self.fitted:
            raise ValueError(EIGEN_NOT_FITTED)
        return super().apply_factors(factor, out)

    def squared_norms(self, block: torch.Tensor) -> torch.Tensor:
        # orthonormal factors: ||U_out w U_in^T||_F = ||w||_F
        return (block * block).sum(dim=1)


class _OrthonormalMatrix(_Matrix):
    """The heads' R of "eigen": the top eigenvectors of the heads' inputs' second moment,
    set by :meth:`fit` (orthonormal columns, so ||R w|| = ||w||)."""

    def __init__(self, inputs: int, columns: int):
        self.inputs, self.columns, self.matrix = inputs, columns, None

    def to(self, device):
        return self if self.matrix is None else super().to(device)

    def fit(self, input_moment: torch.Tensor) -> None:
        self.matrix = top_eigenvectors(input_moment, self.columns)

    def apply(self, flat: torch.Tensor) -> torch.Tensor:
        if self.matrix is None:
            raise ValueError(EIGEN_NOT_FITTED)
        return super().apply(flat)

    def squared_norms(self, block: torch.Tensor) -> torch.Tensor:
        return (block * block).sum(dim=1)


def _fit_sums(factors: list[LayerFactors], outputs, labels, regression, task_index,
              n_tasks: int, moments: bool, fisher: bool) -> list[list]:
    """Per layer, one batch's sums for :meth:`LayerProjector.fit`: [delta moment (out, out;
    None for the heads), input moment (in + 1, in + 1), R (out,), C (in + 1,)], float64
    (of float32 products); the moments only with ``moments``, R and C (the row and column sums
    of the squared loss gradients l'(x)^2 delta_i^2 [a; 1]_j^2, float64) only with
    ``fisher``; what is not computed is None."""
    sums = []
    weight = None
    if fisher:
        first, _ = loss_derivatives(outputs, labels, regression)
        weight = first**2
    for index, factor in enumerate(factors):
        inputs, deltas = factor.inputs, factor.deltas
        delta_moment = input_moment = rows = columns = None
        if moments:
            # float32 products (float64 ones cost more than a training epoch on a
            # [256, 256] trunk), float64 sums over the batches
            input_moment = row_gram(inputs.T).double()
            delta_moment = None if deltas is None else row_gram(deltas.T).double()
        if fisher:
            # float32 products of positive terms, float64 sums over the batches
            squared_inputs = inputs**2
            if deltas is None:
                # the heads: delta is e_t, so R_t sums over task t's examples
                rows = torch.zeros(n_tasks, dtype=inputs.dtype, device=inputs.device)
                rows.index_add_(0, task_index, weight * squared_inputs.sum(dim=1))
                columns = squared_inputs.T @ weight
            else:
                squared_deltas = deltas**2
                rows = squared_deltas.T @ (weight * squared_inputs.sum(dim=1))
                columns = squared_inputs.T @ (weight * squared_deltas.sum(dim=1))
            rows, columns = rows.double(), columns.double()
        sums.append([delta_moment, input_moment, rows, columns])
    return sums


def _factor_batches(model: MultiHeadNet, examples: SplitTensors, batch_size: int):
    """(task_index, gradient factors) of ``examples``, ``batch_size`` at a time: one pass of
    :func:`taskgroup.estimate.gradients.layer_factors`."""
    for start in range(0, examples.features.shape[0], batch_size):
        part = slice(start, start + batch_size)
        task_index = examples.task_index[part]
        yield task_index, layer_factors(model, examples.features[part], task_index)[1]


def _adam_scales(rows: torch.Tensor, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(r, c), float32: v_ij ~ R_i C_j / S with S = sum(R), so v_ij^(-1/4) = r_i c_j with
    r = S^(1/4) R^(-1/4) and c = C^(-1/4); an entry whose R or C is 0 gets scale 0."""
    total = float(rows.sum())
    row = torch.where(rows > 0, rows.clamp(min=1e-300) ** -0.25, 0.0) * total**0.25
    column = torch.where(columns > 0, columns.clamp(min=1e-300) ** -0.25, 0.0)
    return row.float(), column.float()


def _scaled_moment(moment: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """diag(s) M diag(s): the second moment of the factors scaled by ``scale``."""
    scale = scale.double()
    return moment * scale.unsqueeze(1) * scale.unsqueeze(0)


def keeps_every_parameter(shapes, columns: list[int]) -> bool:
    """Whether ``columns`` (per layer, :func:`taskgroup.resources.allocate_columns`) give
    every layer of ``shapes`` all its parameters: the projection is then exact (P = I)."""
    return columns == [out * inputs for out, inputs in shapes]


class LayerProjector:
    """The projection of ``settings`` for a model of linear layers ``layer_shapes`` ((out,
    in + 1), heads last; see :func:`taskgroup.estimate.gradients.layer_shapes`): one block
    per layer, columns from :func:`taskgroup.resources.allocate_columns`. ``exact`` is True
    when d = p (every block the identity). The model given to :meth:`project` must have
    these layers."""

    def __init__(self, layer_shapes, settings: ProjectionSettings):
        self.layer_shapes = [tuple(shape) for shape in layer_shapes]
        self.settings = settings
        # preconditioner "adam": (row scale (out,), column scale (in + 1,)) per layer, heads
        # last (their rows are the tasks), set by fit; None until then or without one
        self.scales: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        columns = allocate_columns(self.layer_shapes, settings.dim)
        self.exact = keeps_every_parameter(self.layer_shapes, columns)
        if settings.structure == "energy" and not self.exact:
            raise ValueError(
                "projection structure energy chooses its columns on the data: for a model of "
                f"more than dim = {settings.dim} parameters it is an EnergyProjector "
                "(make_projector builds the right one)"
            )
        self.blocks = [
            self._block(index, out, inputs, cols)
            for index, ((out, inputs), cols) in enumerate(
                zip(self.layer_shapes[:-1], columns[:-1])
            )
        ]
        n_tasks, head_inputs = self.layer_shapes[-1]
        self.head_columns = columns[-1] // n_tasks
        self.head = self._head_block(head_inputs, self.head_columns)
        self.segments = [block.columns for block in self.blocks] + [
            n_tasks * self.head.columns
        ]
        self.dim = sum(self.segments)

    def _block(self, index: int, out: int, inputs: int, columns: int):
        seed = derived_seed(self.settings.seed, index)
        if columns == out * inputs:
            return _Identity((out, inputs))
        if self.settings.structure == "kronecker":
            return _Kronecker(out, inputs, columns, self.settings.kind, seed)
        if self.settings.structure == "eigen":
            return _KroneckerEigen(out, inputs, columns)
        if self.settings.structure == "sparse":
            return _Sparse(out * inputs, columns, self.settings.nonzeros, self.settings.kind, seed)
        return _Dense(out * inputs, columns, self.settings.kind, seed)

    def _head_block(self, inputs: int, columns: int):
        # R of the heads' I_k (x) R: small ((width + 1) x b), so it is held as a dense matrix
        # (a sparse one with its zeros); kronecker and dense both use an i.i.d. R.
        seed = derived_seed(self.settings.seed, len(self.layer_shapes) - 1)
        if columns == inputs:
            return _Identity((1, inputs))
        if self.settings.structure == "eigen":
            return _OrthonormalMatrix(inputs, columns)
        if self.settings.structure == "sparse":
            indices, values = sparse_pattern(
                inputs, columns, self.settings.nonzeros, self.settings.kind, seed
            )
            return _Matrix(torch.zeros(inputs, columns).scatter_(1, indices, values))
        return _Matrix(random_matrix(inputs, columns, self.settings.kind, seed))

    @property
    def needs_fit(self) -> bool:
        """Whether something still waits for :meth:`fit`: an "eigen" block, or the scales
        of preconditioner "adam"."""
        return (
            any(not getattr(block, "fitted", True) for block in self.blocks)
            or (isinstance(self.head, _OrthonormalMatrix) and self.head.matrix is None)
            or (self.settings.preconditioner == "adam" and self.scales is None)
        )

    def fit(self, model: MultiHeadNet, examples: SplitTensors, batch_size: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fit to the n ``examples`` (features, task_index, labels, regression) at
        ``model``'s parameters, in one pass, ``batch_size`` examples at a time: with
        preconditioner "adam", every layer's scales (see the module docstring); with
        structure "eigen", each block's top eigenvectors of the second moments of its
        (scaled) deltas and inputs [a; 1] (float32 products, float64 sums, so the batch size
        moves them at the rounding level; the heads' R, shared by the tasks, from the inputs
        scaled by the column scale only). Returns the examples' projected gradients (n,
        dim) and outputs (n,) with the fitted projection: from the pass's own gradient
        factors when they take no more memory than the projected rows in float64 (the
        layers' widths sum to at most 2 dim; structure "energy": from the products with its
        candidate vectors that its choice computed, equal to a later projection's to float
        rounding), else from a second pass."""
        if not self.needs_fit:
            return project_examples(model, self, examples.features, examples.task_index,
                                    batch_size)
        n_tasks = self.layer_shapes[-1][0]
        eigen = self.settings.structure in ("eigen", "energy")
        adam = self.settings.preconditioner == "adam"
        # Kept float32 factors of at most 2 dim entries per example take at most the
        # memory of the projected rows in float64, of which the projection job reserves
        # COPIES (taskgroup.resources.projection_mb); the second pass would recompute the
        # same factors (about a third of the fit's time on a [256, 256] trunk).
        keep = sum(out + inputs for out, inputs in self.layer_shapes[:-1]) + (
            self.layer_shapes[-1][1]
        ) <= 2 * self.dim
        regression = examples.regression_mask()
        sums, kept = None, []
        for start in range(0, examples.features.shape[0], batch_size):
            part = slice(start, start + batch_size)
            task_index = examples.task_index[part]
            outputs, factors = layer_factors(model, examples.features[part], task_index)
            batch = _fit_sums(factors, outputs, examples.labels[part], regression[part],
                              task_index, n_tasks, moments=eigen, fisher=adam)
            sums = batch if sums is None else [
                [None if a is None else a + b for a, b in zip(old, new)]
                for old, new in zip(sums, batch)
            ]
            if keep:
                kept.append((part, task_index, outputs, factors))
        n = examples.features.shape[0]
        if adam:
            self.scales = [_adam_scales(rows / n, columns / n) for *_, rows, columns in sums]
        if eigen:
            moments = [(deltas, inputs) for deltas, inputs, *_ in sums]
            if adam:
                moments = [
                    (None if d is None else _scaled_moment(d, row), _scaled_moment(i, column))
                    for (d, i), (row, column) in zip(moments, self.scales)
                ]
            self.fit_moments(moments)
        # lazy: a structure that fits nothing more reads no factors (and makes no pass)
        batches = (
            self._kept_factors(kept) if keep else _factor_batches(model, examples, batch_size)
        )
        products = self._fit_to_factors(
            ((task_index, self.precondition(task_index, factors))
             for task_index, factors in batches),
            keep,
        )
        if not keep:
            return project_examples(model, self, examples.features, examples.task_index,
                                    batch_size)
        projected = torch.empty(n, self.dim, dtype=examples.features.dtype,
                                device=examples.features.device)
        outputs = torch.empty(n, dtype=examples.features.dtype, device=examples.features.device)
        for index, (rows, task_index, batch_outputs, factors) in enumerate(kept):
            if products is None:
                self.project_factors(task_index, self.precondition(task_index, factors),
                                     projected[rows])
            else:
                self.project_products(task_index, products[index], projected[rows])
                products[index] = None
            outputs[rows] = batch_outputs
        return projected, outputs

    def _kept_factors(self, kept: list):
        """(task_index, factors) of the kept batches; a structure whose fit keeps what the
        projection needs instead (:meth:`_fit_to_factors`) lets each batch's factors go
        once read, so that the two are not held at once."""
        for index, (rows, task_index, outputs, factors) in enumerate(kept):
            if self.projects_while_fitting:
                kept[index] = (rows, task_index, outputs, None)
            yield task_index, factors

    # Whether _fit_to_factors, asked to keep, returns what project_products needs.
    projects_while_fitting = False

    def _fit_to_factors(self, batches, keep: bool = False) -> list | None:
        """What a structure fits to the training examples' (preconditioned) gradient
        factors, after the moments: nothing here (see :class:`EnergyProjector`). Does not
        consume ``batches`` (an iterable of (task_index, factors)) when it needs nothing.
        With ``keep``, a structure that :attr:`projects_while_fitting` returns one entry
        per batch for :meth:`project_products`; else None."""
        return None

    def fit_moments(self, moments: list[tuple[torch.Tensor | None, torch.Tensor]]) -> None:
        """Set the "eigen" blocks from the second moments, per layer in
        :func:`taskgroup.estimate.gradients.layer_shapes` order, of its deltas (out, out;
        None for the heads) and of its inputs (in + 1, in + 1)."""
        for block, (delta_moment, input_moment) in zip(self.blocks, moments[:-1]):
            if isinstance(block, _KroneckerEigen):
                block.fit(delta_moment, input_moment)
        if isinstance(self.head, _OrthonormalMatrix):
            self.head.fit(moments[-1][1])

    def to(self, device) -> "LayerProjector":
        for block in self.blocks:
            block.to(device)
        self.head.to(device)
        if self.scales is not None:
            self.scales = [(row.to(device), column.to(device)) for row, column in self.scales]
        return self

    def project(
        self, model: MultiHeadNet, features: torch.Tensor, task_index: torch.Tensor,
        out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`Projector.project`: one forward and one backward pass for the layer
        factors of the batch, then :meth:`project_factors`."""
        outputs, factors = layer_factors(model, features, task_index)
        factors = self.precondition(task_index, factors)
        return self.project_factors(task_index, factors, out), outputs

    def precondition(self, task_index: torch.Tensor, factors: list[LayerFactors]
                     ) -> list[LayerFactors]:
        """The factors of the gradients D^(-1/2) g (preconditioner "adam": each delta
        scaled by its layer's row scale, each input by its column scale, the heads' inputs
        also by the row scale of the example's task); unchanged without a preconditioner.
        Raises ValueError when the scales were not fitted."""
        if self.settings.preconditioner == "none":
            return factors
        scales = self._fitted_scales("projecting")
        scaled = [
            LayerFactors(f.inputs * column.to(f.inputs), f.deltas * row.to(f.deltas))
            for f, (row, column) in zip(factors[:-1], scales[:-1])
        ]
        heads = factors[-1].inputs
        row, column = scales[-1]
        per_task = row.to(heads)[task_index].unsqueeze(1)
        return scaled + [LayerFactors(heads * column.to(heads) * per_task, None)]

    def _fitted_scales(self, doing: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.scales is None:
            raise ValueError("projection.preconditioner adam: the scales were not fitted to "
                             f"the examples (LayerProjector.fit) before {doing}")
        return self.scales

    def project_factors(
        self, task_index: torch.Tensor, factors: list[LayerFactors],
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """z (n, dim) from the gradient factors of n examples, written into ``out`` (n, dim;
        rows of a larger contiguous matrix) when given: each block's columns are written in
        place, so a batch is not assembled from parts and copied again."""
        heads = factors[-1].inputs
        if out is None:
            out = torch.empty(heads.shape[0], self.dim, dtype=heads.dtype, device=heads.device)
        start = 0
        for block, factor, size in zip(self.blocks, factors[:-1], self.segments):
            columns = out[:, start : start + size]
            if isinstance(block, _Kronecker):
                block.apply_factors(factor, columns)
            else:
                columns.copy_(block.apply(_outer(factor)))
            start += size
        n_tasks = self.layer_shapes[-1][0]
        # e_t (x) R^T [a; 1]: the example's own task's columns only, the others 0
        own = out[:, start:].view(-1, n_tasks, self.head.columns)
        own.zero_()
        own[torch.arange(heads.shape[0], device=heads.device), task_index] = (
            self.head.apply(heads).to(out.dtype)
        )
        return out

    def shift_norms(self, weights: torch.Tensor) -> torch.Tensor:
        """||P w|| (s,) for s projected shifts ``weights`` (s, dim), without forming P w."""
        squared = torch.zeros(weights.shape[0], dtype=weights.dtype, device=weights.device)
        start = 0
        for block, size in zip(self.blocks, self.segments):
            squared += block.squared_norms(weights[:, start : start + size])
            start += size
        heads = weights[:, start:]
        if isinstance(self.head, _Identity):
            squared += _Identity(self.layer_shapes[-1]).squared_norms(heads)
        else:
            n_tasks = self.layer_shapes[-1][0]
            per_task = self.head.squared_norms(heads.reshape(-1, self.head.columns))
            squared += per_task.reshape(-1, n_tasks).sum(dim=1)
        return squared.clamp(min=0).sqrt()

    def parameter_norm(self, model: MultiHeadNet) -> float:
        """||theta|| of ``model`` (with these layers) in the metric of :meth:`shift_norms`:
        the Euclidean norm without a preconditioner; with "adam", ||D^(1/2) theta|| over the
        entries of positive scale (theta_ij / (r_i c_j); an entry of zero scale never
        moves). Raises ValueError when the scales were not fitted."""
        if self.settings.preconditioner == "none":
            return parameter_norm(model)
        squared = 0.0
        for matrix, (row, column) in zip(layer_parameters(model), self._fitted_scales("measuring")):
            scale = row.double().unsqueeze(1) * column.double().unsqueeze(0)
            moved = scale > 0
            squared += float(((matrix.detach().double()[moved] / scale[moved]) ** 2).sum())
        return math.sqrt(squared)

    def describe(self) -> dict:
        return self.settings.description()

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, LayerProjector)
            and self.describe() == other.describe()
            and self.layer_shapes == other.layer_shapes
        )

    __hash__ = None


class EnergyProjector(LayerProjector):
    """Structure "energy" for a model of more than d parameters (see the module
    docstring): :meth:`fit_moments` sets each layer's candidate eigenvectors,
    :meth:`_fit_to_factors` measures the second moment of every candidate coordinate over
    the training examples and keeps the d largest. Columns: the trunk layers' chosen
    products in layer order, then the heads' (task, direction) pairs grouped by task.
    ``segments`` (the columns per layer, heads last) are known after the fit only."""

    def __init__(self, layer_shapes, settings: ProjectionSettings):
        self.layer_shapes = [tuple(shape) for shape in layer_shapes]
        self.settings = settings
        self.scales = None
        self.exact = False
        self.dim = settings.dim
        # candidate eigenvectors per layer: (left (out, a), right (in + 1, b)) for the
        # trunk, (None, right) for the heads; set by fit_moments
        self.bases: list[tuple[torch.Tensor | None, torch.Tensor]] | None = None
        # chosen coordinates per layer: (rows (m,), columns (m,)) int64, for the heads
        # (tasks, directions); set by _fit_to_factors
        self.chosen: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def segments(self) -> list[int]:
        if self.chosen is None:
            raise ValueError(ENERGY_NOT_FITTED)
        return [len(rows) for rows, _ in self.chosen]

    @property
    def needs_fit(self) -> bool:
        return self.chosen is None or (
            self.settings.preconditioner == "adam" and self.scales is None
        )

    def fit_moments(self, moments: list[tuple[torch.Tensor | None, torch.Tensor]]) -> None:
        """The candidates: per layer the top min(side, d) eigenvectors of its deltas' and
        its inputs' second moments (the heads: of their inputs'); no coordinate is chosen
        until :meth:`_fit_to_factors`."""
        self.bases = [
            (None if deltas is None else top_eigenvectors(deltas, min(deltas.shape[0], self.dim)),
             top_eigenvectors(inputs, min(inputs.shape[0], self.dim)))
            for deltas, inputs in moments
        ]
        self.chosen = None

    projects_while_fitting = True

    def _fit_to_factors(self, batches, keep: bool = False) -> list | None:
        """Keep the d coordinates of largest sum over the examples of their squared
        projected gradient (float32 products, float64 sums); ties go to the earlier
        layer, row and column, so the choice is a function of these sums alone. With
        ``keep``, returns each batch's :meth:`candidate_products`, from which
        :meth:`project_products` projects it without multiplying again (no more memory
        than its factors)."""
        if self.bases is None:
            raise ValueError(ENERGY_NOT_FITTED)
        n_tasks = self.layer_shapes[-1][0]
        energies, kept = None, []
        for task_index, factors in batches:
            products = self.candidate_products(factors)
            batch = [((rows * rows).T @ (columns * columns)).double()
                     for rows, columns in products[:-1]]
            heads = products[-1][1]
            per_task = torch.zeros(n_tasks, heads.shape[1], dtype=torch.float64,
                                   device=heads.device)
            per_task.index_add_(0, task_index, (heads * heads).double())
            batch.append(per_task)
            energies = batch if energies is None else [a + b for a, b in zip(energies, batch)]
            if keep:
                kept.append(products)
        sizes = [energy.numel() for energy in energies]
        flat = torch.cat([energy.flatten() for energy in energies])
        order = torch.sort(-flat, stable=True).indices[: self.dim]
        chosen, bases, start = [], [], 0
        for (left, right), energy, size in zip(self.bases, energies, sizes):
            mine = torch.sort(order[(order >= start) & (order < start + size)] - start).values
            rows, columns = mine // energy.shape[1], mine % energy.shape[1]
            chosen.append((rows, columns))
            # only the vectors some chosen coordinate uses are applied
            used = int(columns.max()) + 1 if len(mine) else 0
            bases.append((
                None if left is None else left[:, : int(rows.max()) + 1 if len(mine) else 0],
                right[:, :used],
            ))
            start += size
        self.chosen, self.bases = chosen, bases
        return kept if keep else None

    def to(self, device) -> "EnergyProjector":
        if self.bases is not None:
            self.bases = [(None if left is None else left.to(device), right.to(device))
                          for left, right in self.bases]
        if self.chosen is not None:
            self.chosen = [(rows.to(device), columns.to(device)) for rows, columns in self.chosen]
        if self.scales is not None:
            self.scales = [(row.to(device), column.to(device)) for row, column in self.scales]
        return self

    def candidate_products(self, factors: list[LayerFactors]
                           ) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
        """Per layer, the n examples' coordinates along its candidate vectors: (deltas @
        U (n, a), [a; 1] @ V (n, b)) for the trunk, (None, [a; 1] @ V) for the heads."""
        if self.bases is None:
            raise ValueError(ENERGY_NOT_FITTED)
        return [
            (None if left is None else factor.deltas @ left, factor.inputs @ right)
            for (left, right), factor in zip(self.bases, factors)
        ]

    def project_factors(
        self, task_index: torch.Tensor, factors: list[LayerFactors],
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """z (n, d): each chosen coordinate (u_i^T delta) (v_j^T [a; 1]); a head's
        coordinates are 0 on the other tasks' examples. Written into ``out`` when given."""
        return self.project_products(task_index, self.candidate_products(factors), out)

    def project_products(
        self, task_index: torch.Tensor, products: list[tuple[torch.Tensor | None, torch.Tensor]],
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`project_factors` from the factors' :meth:`candidate_products`, taken with
        these bases or the fit's (whose first vectors they are)."""
        if self.chosen is None:
            raise ValueError(ENERGY_NOT_FITTED)
        heads = products[-1][1]
        if out is None:
            out = torch.empty(heads.shape[0], self.dim, dtype=heads.dtype, device=heads.device)
        start = 0
        for (deltas, inputs), (rows, columns) in zip(products[:-1], self.chosen):
            # index_select: a gather of whole columns, 4 times faster than x[:, index]
            if len(rows):
                torch.mul(deltas.index_select(1, rows), inputs.index_select(1, columns),
                          out=out[:, start : start + len(rows)])
            start += len(rows)
        tasks, directions = self.chosen[-1]
        own = (task_index.unsqueeze(1) == tasks.unsqueeze(0)).to(out.dtype)
        torch.mul(heads.index_select(1, directions), own, out=out[:, start:])
        return out

    def shift_norms(self, weights: torch.Tensor) -> torch.Tensor:
        """||P w|| = ||w||: the chosen products of orthonormal vectors are orthonormal (a
        projector rebuilt from its description can say it before any fit)."""
        return weights.norm(dim=1)


ENERGY_NOT_FITTED = ("projection structure energy: the coordinates were not chosen on the "
                     "examples (LayerProjector.fit) before projecting")


def make_projector(model: MultiHeadNet, settings: ProjectionSettings) -> Projector:
    """The projector of ``settings`` for ``model``'s parameters (on the CPU)."""
    shapes = layer_shapes(model)
    if settings.structure == "energy" and not keeps_every_parameter(
        shapes, allocate_columns(shapes, settings.dim)
    ):
        return EnergyProjector(shapes, settings)
    return LayerProjector(shapes, settings)


def from_description(model: MultiHeadNet, description: Mapping) -> Projector:
    """The projector that ``describe()`` described, rebuilt for ``model`` (equal to the
    original when ``model`` has the same parameter shapes). ``description`` may hold more
    keys (a projection table row): see :meth:`ProjectionSettings.from_mapping`."""
    return make_projector(model, ProjectionSettings.from_mapping(description))


def parameter_norm(model: MultiHeadNet) -> float:
    """||theta|| of all of ``model``'s parameters, flattened into one vector."""
    return float(torch.cat([p.detach().flatten() for p in model.parameters()]).norm())


def projection_batch_size(
    projector: LayerProjector, memory_mb: float, bytes_per_entry: int, most: int
) -> int:
    """Examples projected at a time (1 to ``most``) so that a batch's per-example gradients
    of the largest layer and its projected rows, ``bytes_per_entry`` bytes per entry, take
    at most ``memory_mb`` MB."""
    widest = max(out * inputs for out, inputs in projector.layer_shapes)
    per_example = bytes_per_entry * (widest + projector.dim)
    return max(1, min(most, int(memory_mb * 10**6 // per_example)))


def project_examples(
    model: MultiHeadNet, projector: Projector, features: torch.Tensor, task_index: torch.Tensor,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected gradients z (n, dim) and outputs f(x; theta) (n,) of n examples, in
    batches of ``batch_size`` examples (which sets the peak memory)."""
    # Each batch is written into one matrix allocated once: collecting the batches and
    # concatenating them would hold the rows twice at the end and copy them again.
    n = features.shape[0]
    projected = torch.empty(n, projector.dim, dtype=features.dtype, device=features.device)
    outputs = torch.empty(n, dtype=features.dtype, device=features.device)
    for start in range(0, n, batch_size):
        rows = slice(start, start + batch_size)
        _, outputs[rows] = projector.project(
            model, features[rows], task_index[rows], projected[rows]
        )
    return projected, outputs
