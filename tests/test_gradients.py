import numpy as np
import pytest
import torch

from taskgroup.estimate.gradients import layer_factors, layer_parameters, per_example_gradients
from taskgroup.estimate.projection import (
    DenseProjector,
    KroneckerProjector,
    make_projector,
    project_examples,
    random_matrix,
)
from taskgroup.estimate.settings import ProjectionSettings
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


def test_kronecker_projection_with_identity_factors_is_exact(tiny):
    model, features, task_index = tiny
    projector = make_projector(
        model, ProjectionSettings("kronecker", "rademacher", 0, factor_dim=64, dim=None)
    )
    assert projector.dim == sum(p.numel() for p in model.parameters())
    z, _ = project_examples(model, projector, features, task_index, batch_size=4096)
    exact = loop_gradients(model, features, task_index)
    torch.testing.assert_close(z @ z.T, exact @ exact.T, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_dense_projection_preserves_inner_products_within_jl_tolerance(kind):
    torch.manual_seed(1)
    vectors = torch.randn(20, 3000)
    dim = 2000
    projector = DenseProjector([3000], dim, kind, seed=3, block_rows=700)
    projected = projector.project_gradients([vectors])
    exact, approx = vectors @ vectors.T, projected @ projected.T
    norms = vectors.norm(dim=1)
    # JL: |<Pu, Pv> - <u, v>| <= eps |u| |v| with eps ~ c sqrt(log(n) / d)
    epsilon = 4 * np.sqrt(np.log(20) / dim)
    assert ((approx - exact).abs() <= epsilon * torch.outer(norms, norms)).all()
    relative = (approx.diagonal() / exact.diagonal() - 1).abs()
    assert relative.max() < epsilon


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_kronecker_projection_preserves_inner_products_on_average(kind):
    torch.manual_seed(2)
    deltas, inputs = torch.randn(30, 40), torch.randn(30, 50)
    from taskgroup.estimate.gradients import LayerFactors

    projector = KroneckerProjector([(40, 50), (2, 3)], factor_dim=32, kind=kind, seed=0)
    heads = LayerFactors(torch.randn(30, 3), None)
    z = projector.project_factors(torch.zeros(30, dtype=torch.int64),
                                  [LayerFactors(inputs, deltas), heads])
    first = z[:, : 32 * 32]
    exact = (deltas @ deltas.T) * (inputs @ inputs.T)
    approx = first @ first.T
    norms = exact.diagonal().sqrt()
    off = ~torch.eye(30, dtype=torch.bool)
    error = ((approx - exact) / torch.outer(norms, norms))[off]
    assert error.abs().mean() < 0.15  # factor dims 32 x 32: errors of order 1/sqrt(32)
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


def test_shift_norms_match_an_explicit_projection():
    torch.manual_seed(3)
    projector = KroneckerProjector([(30, 20), (2, 3)], factor_dim=16, kind="gaussian", seed=1)
    assert projector.segment_shapes == [(16, 16), (2, 3)] and projector.dim == 262
    weights = torch.randn(4, 262, dtype=torch.float64)
    left, right = projector.left[0].double(), projector.right[0].double()
    first = left @ weights[:, :256].reshape(4, 16, 16) @ right.T  # (4, 30, 20)
    second = weights[:, 256:]  # the 2 x 3 layer is kept exactly
    explicit = first.flatten(1).norm(dim=1) ** 2 + second.norm(dim=1) ** 2
    torch.testing.assert_close(projector.shift_norms(weights) ** 2, explicit)
    dense = DenseProjector([50, 30], dim=6, kind="gaussian", seed=2, block_rows=20)
    full = torch.cat([m for _, _, m in dense.blocks()]).double()
    assert full.shape == (80, 6)
    shifts = torch.randn(3, 6, dtype=torch.float64)
    torch.testing.assert_close(dense.shift_norms(shifts), (shifts @ full.T).norm(dim=1))


def test_layer_parameters_follow_layer_shapes(tiny):
    from taskgroup.estimate.gradients import layer_shapes

    model, _, _ = tiny
    assert [tuple(m.shape) for m in layer_parameters(model)] == layer_shapes(model)
