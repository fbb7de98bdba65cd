import pytest
import torch

from taskgroup.estimate.gradients import (
    LayerFactors,
    layer_factors,
    layer_parameters,
    per_example_gradients,
)
from taskgroup.estimate.projection import (
    EnergyProjector,
    LayerProjector,
    allocate_columns,
    make_projector,
    project_examples,
    random_matrix,
    sparse_pattern,
)
from taskgroup.estimate.settings import STRUCTURES, ProjectionSettings
from taskgroup.models.network import MultiHeadNet


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = MultiHeadNet(n_features=5, n_tasks=3, hidden_sizes=[4, 3])
    model.eval()
    features = torch.randn(7, 5)
    task_index = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    return model, features, task_index


def loop_gradients(model, features, task_index):
    """Reference: one autograd call per example."""
    rows = []
    for x, t in zip(features, task_index):
        output = model(x.unsqueeze(0), t.unsqueeze(0)).squeeze(0)
        grads = torch.autograd.grad(output, list(model.parameters()))
        rows.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(rows)


def flat(gradients, model):
    return torch.cat([gradients[n].flatten(1) for n, _ in model.named_parameters()], dim=1)


def test_vmap_gradients_equal_a_plain_autograd_loop(tiny):
    model, features, task_index = tiny
    batched = flat(per_example_gradients(model, features, task_index), model)
    torch.testing.assert_close(batched, loop_gradients(model, features, task_index))


def test_layer_factors_rebuild_the_per_example_gradients(tiny):
    model, features, task_index = tiny
    outputs, factors = layer_factors(model, features, task_index)
    torch.testing.assert_close(outputs, model(features, task_index).detach())
    reference = per_example_gradients(model, features, task_index)
    linears = [m for m in model.trunk if isinstance(m, torch.nn.Linear)]
    for index, layer in enumerate(linears):
        outer = factors[index].deltas.unsqueeze(2) * factors[index].inputs.unsqueeze(1)
        name = f"trunk.{list(model.trunk).index(layer)}"
        torch.testing.assert_close(outer[:, :, :-1], reference[f"{name}.weight"])
        torch.testing.assert_close(outer[:, :, -1], reference[f"{name}.bias"])
    heads = factors[-1].inputs  # (n, width + 1); delta is the one-hot task vector
    for n, t in enumerate(task_index.tolist()):
        torch.testing.assert_close(reference["head_weight"][n, t], heads[n, :-1])
        assert reference["head_weight"][n].abs().sum() == reference["head_weight"][n, t].abs().sum()
        assert reference["head_bias"][n, t] == 1.0


@pytest.mark.parametrize("structure", STRUCTURES)
def test_a_model_with_at_most_dim_parameters_is_projected_exactly(tiny, structure):
    model, features, task_index = tiny
    projector = make_projector(model, settings_of(structure, 1024))
    assert projector.exact and projector.dim == sum(p.numel() for p in model.parameters())
    z, _ = project_examples(model, projector, features, task_index, batch_size=4096)
    exact = loop_gradients(model, features, task_index)
    # z holds every gradient coordinate (in layer order, [W, b] per layer)
    torch.testing.assert_close(z @ z.T, exact @ exact.T, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(z.norm(dim=1), exact.norm(dim=1))


def settings_of(structure, dim, kind="rademacher", seed=0):
    return ProjectionSettings(structure, kind, seed, dim, 3 if structure == "sparse" else None)


def test_columns_are_shared_in_proportion_with_per_task_heads():
    shapes = [(40, 50), (3, 41), (10, 4)]  # 2000, 123 and heads 10 x 4 = 40 parameters
    assert allocate_columns(shapes, 5000) == [2000, 123, 40]  # fits: exact
    # 600 x 2000 / 2163 = 554.8, 600 x 123 / 2163 = 34.1, heads 11.1 -> one per task
    assert allocate_columns(shapes, 600) == [554, 34, 10]
    # heads 10 x 40 = 400 of 2523: 95.1 columns, 9 per task
    assert allocate_columns([(40, 50), (3, 41), (10, 40)], 600) == [475, 29, 90]
    # one head column per task at least, even when that exceeds dim
    assert allocate_columns([(40, 50), (30, 3)], 20)[-1] == 30


def explicit_matrix(projector):
    """P (p, d), row by row: the projection of each parameter's unit gradient."""
    shapes = projector.layer_shapes
    rows = []
    for layer, (out, inputs) in enumerate(shapes):
        for o in range(out):
            for i in range(inputs):
                factors = [
                    LayerFactors(torch.zeros(1, b), torch.zeros(1, a)) for a, b in shapes[:-1]
                ]
                factors.append(LayerFactors(torch.zeros(1, shapes[-1][1]), None))
                task = torch.tensor([o if layer == len(shapes) - 1 else 0])
                factors[layer].inputs[0, i] = 1.0
                if layer < len(shapes) - 1:
                    factors[layer].deltas[0, o] = 1.0
                rows.append(projector.project_factors(task, factors)[0])
    return torch.stack(rows).double()


@pytest.mark.parametrize("structure", [s for s in STRUCTURES if s != "energy"])
def test_shift_norms_and_projections_match_an_explicit_matrix(structure):
    """Energy chooses its columns on the examples: see the next test."""
    torch.manual_seed(3)
    shapes = [(6, 5), (3, 7), (4, 4)]
    projector = LayerProjector(shapes, settings_of(structure, 20, kind="gaussian", seed=1))
    assert not projector.exact
    if projector.needs_fit:  # eigen: from second moments of random factors
        def moment(size):
            factor = torch.randn(2 * size, size)
            return factor.T @ factor
        projector.fit_moments([(None if layer == len(shapes) - 1 else moment(out), moment(inputs))
                               for layer, (out, inputs) in enumerate(shapes)])
        assert not projector.needs_fit
    matrix = explicit_matrix(projector)
    assert matrix.shape == (30 + 21 + 16, projector.dim)
    weights = torch.randn(5, projector.dim, dtype=torch.float64)
    torch.testing.assert_close(projector.shift_norms(weights), (weights @ matrix.T).norm(dim=1))
    # a head's columns are its own: task t's head gradient lands in task t's columns only
    heads = matrix[51:].reshape(4, 4, -1)[:, :, projector.dim - 4 * projector.head_columns :]
    for task in range(4):
        own = slice(task * projector.head_columns, (task + 1) * projector.head_columns)
        others = torch.ones(heads.shape[2], dtype=torch.bool)
        others[own] = False
        assert heads[task][:, others].abs().max() == 0
    # the projection of a batch is g^T P for its per-example gradients
    deltas = [torch.randn(3, out) for out, _ in shapes[:-1]]
    inputs = [torch.randn(3, inputs) for _, inputs in shapes]
    task_index = torch.tensor([0, 3, 1])
    factors = [LayerFactors(a, d) for a, d in zip(inputs[:-1], deltas)]
    factors.append(LayerFactors(inputs[-1], None))
    flat = [(d.unsqueeze(2) * a.unsqueeze(1)).flatten(1) for a, d in zip(inputs, deltas)]
    heads_flat = torch.zeros(3, 4, 4)
    heads_flat[torch.arange(3), task_index] = inputs[-1]
    gradient = torch.cat(flat + [heads_flat.flatten(1)], dim=1).double()
    torch.testing.assert_close(
        projector.project_factors(task_index, factors).double(), gradient @ matrix,
        rtol=1e-5, atol=1e-5,
    )


def _energy_fitted(shapes, dim, factors, task_index):
    """An EnergyProjector fitted to ``factors`` (their moments, then their coordinates'
    second moments in two batches)."""
    projector = EnergyProjector(shapes, settings_of("energy", dim))
    heads = factors[-1].inputs
    projector.fit_moments(
        [((f.deltas.T @ f.deltas).double(), (f.inputs.T @ f.inputs).double())
         for f in factors[:-1]] + [(None, (heads.T @ heads).double())]
    )
    first, second = slice(0, 5), slice(5, None)
    projector._fit_to_factors(
        (task_index[part], [LayerFactors(f.inputs[part], None if f.deltas is None
                                         else f.deltas[part]) for f in factors])
        for part in (first, second)
    )
    return projector


def test_energy_keeps_the_d_orthonormal_coordinates_of_most_gradient_energy():
    """Structure energy on 12 examples of a model of p = 67 parameters, d = 20: its
    columns are orthonormal (||P w|| = ||w||), a head's columns are its task's only, z is
    g^T P, and the kept energy sum_x ||z(x)||^2 is the sum of the 20 largest coordinate
    energies of the full eigenbasis (d = p: every coordinate), at least what "eigen"'s
    grid of the same eigenvectors keeps; unfitted, it refuses to project."""
    torch.manual_seed(3)
    shapes = [(6, 5), (3, 7), (4, 4)]
    n = 12
    deltas = [torch.randn(n, out) * torch.linspace(2.0, 0.2, out) for out, _ in shapes[:-1]]
    inputs = [torch.randn(n, size) * torch.linspace(1.5, 0.3, size) for _, size in shapes]
    inputs[-1] = 3 * inputs[-1]  # so that the heads keep columns of several tasks
    task_index = torch.arange(n) % 4
    factors = [LayerFactors(a, d) for a, d in zip(inputs[:-1], deltas)]
    factors.append(LayerFactors(inputs[-1], None))
    unfitted = EnergyProjector(shapes, settings_of("energy", 20))
    assert unfitted.needs_fit
    with pytest.raises(ValueError, match="energy: the coordinates were not chosen"):
        unfitted.project_factors(task_index, factors)
    projector = _energy_fitted(shapes, 20, factors, task_index)
    assert not projector.needs_fit and sum(projector.segments) == projector.dim == 20
    matrix = explicit_matrix(projector)
    torch.testing.assert_close(matrix.T @ matrix, torch.eye(20, dtype=torch.float64),
                               atol=1e-6, rtol=0)
    weights = torch.randn(5, 20, dtype=torch.float64)
    torch.testing.assert_close(projector.shift_norms(weights), (weights @ matrix.T).norm(dim=1))
    heads = matrix[51:].reshape(4, 4, 20)[:, :, 20 - projector.segments[-1] :]
    tasks, _ = projector.chosen[-1]
    assert len(set(tasks.tolist())) > 1 and all(size > 0 for size in projector.segments)
    for task in range(4):
        assert heads[task][:, tasks != task].abs().sum() == 0
    flat = [(d.unsqueeze(2) * a.unsqueeze(1)).flatten(1) for a, d in zip(inputs, deltas)]
    heads_flat = torch.zeros(n, 4, 4)
    heads_flat[torch.arange(n), task_index] = inputs[-1]
    gradient = torch.cat(flat + [heads_flat.flatten(1)], dim=1).double()
    z = projector.project_factors(task_index, factors).double()
    torch.testing.assert_close(z, gradient @ matrix, rtol=1e-5, atol=1e-5)
    every = _energy_fitted(shapes, 67, factors, task_index)  # d = p: all 67 coordinates
    full = explicit_matrix(every)
    torch.testing.assert_close(full.T @ full, torch.eye(67, dtype=torch.float64),
                               atol=1e-6, rtol=0)
    energies = ((gradient @ full) ** 2).sum(dim=0)
    kept = float((z**2).sum())
    assert kept == pytest.approx(float(energies.sort(descending=True).values[:20].sum()),
                                 rel=1e-5)
    grid = LayerProjector(shapes, settings_of("eigen", 20))
    grid.fit_moments([(None if f.deltas is None else (f.deltas.T @ f.deltas).double(),
                       (f.inputs.T @ f.inputs).double()) for f in factors])
    kept_by_grid = float((grid.project_factors(task_index, factors) ** 2).sum())
    assert grid.dim <= 20 and kept >= kept_by_grid - 1e-5 * kept


def test_sparse_rows_have_their_nonzeros_in_distinct_column_blocks():
    columns, values = sparse_pattern(200, 50, 4, "rademacher", seed=2)
    assert columns.shape == (200, 4)
    for block in range(4):  # one entry in each block of 12 or 13 columns
        assert ((columns[:, block] >= 50 * block // 4)
                & (columns[:, block] < 50 * (block + 1) // 4)).all()
    assert torch.allclose(values.abs(), torch.full_like(values, 0.5))  # 1 / sqrt(4)
    again = sparse_pattern(200, 50, 4, "rademacher", seed=2)
    assert torch.equal(columns, again[0]) and torch.equal(values, again[1])
    assert sparse_pattern(3, 2, 4, "gaussian", seed=0)[0].shape == (3, 2)  # at most cols


@pytest.mark.parametrize("structure", [s for s in STRUCTURES if s not in ("eigen", "energy")])
def test_projections_preserve_inner_products_on_average(structure):
    """The random structures (eigen and energy are fitted, not random: see
    test_projection.py)."""
    torch.manual_seed(2)
    deltas, inputs = torch.randn(30, 40), torch.randn(30, 50)
    projector = LayerProjector([(40, 50), (2, 3)], settings_of(structure, 1030, "gaussian"))
    first_columns = projector.segments[0]
    assert 900 <= first_columns <= 1030
    heads = LayerFactors(torch.randn(30, 3), None)
    z = projector.project_factors(
        torch.zeros(30, dtype=torch.int64), [LayerFactors(inputs, deltas), heads]
    )
    first = z[:, :first_columns]
    exact = (deltas @ deltas.T) * (inputs @ inputs.T)
    approx = first @ first.T
    norms = exact.diagonal().sqrt()
    off = ~torch.eye(30, dtype=torch.bool)
    error = ((approx - exact) / torch.outer(norms, norms))[off]
    # about 1000 columns: JL errors of order 1/sqrt(1000) (Kronecker: 1/sqrt(32) per factor)
    assert error.abs().mean() < (0.15 if structure == "kronecker" else 0.06)
    assert abs(error.mean()) < 0.03  # unbiased


def test_random_matrices_are_seeded_and_scaled():
    a = random_matrix(500, 400, "rademacher", seed=5)
    torch.testing.assert_close(a, random_matrix(500, 400, "rademacher", seed=5))
    assert not torch.equal(a, random_matrix(500, 400, "rademacher", seed=6))
    assert torch.allclose(a.abs(), torch.full_like(a, 1 / 20))
    b = random_matrix(2000, 400, "gaussian", seed=5)
    assert (b.var() * 400).item() == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ValueError, match="projection.kind"):
        random_matrix(2, 2, "sparse", 0)


def test_layer_parameters_follow_layer_shapes(tiny):
    from taskgroup.estimate.gradients import layer_shapes

    model, _, _ = tiny
    assert [tuple(m.shape) for m in layer_parameters(model)] == layer_shapes(model)
