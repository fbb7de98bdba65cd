"""The projectors behind one interface: the Projector protocol, describe / from_description,
the settings a projection is built from, and the projection stage's tables."""

import inspect
import logging
import math
import subprocess
import sys
from dataclasses import replace

import pandas as pd
import pytest
import torch
from conftest import small_spec

from taskgroup.data.datasets.planted import generate_planted
from taskgroup.data.examples import SplitTensors, build_task_data
from taskgroup.data.tables import PROJECTED, PROJECTION, read_table, write_table
from taskgroup.estimate.gradients import per_example_gradients
from taskgroup.estimate.linearized import estimate_values, loss_derivatives
from taskgroup.estimate.projection import (
    LayerProjector,
    Projector,
    from_description,
    make_projector,
    parameter_norm,
    project_examples,
    projection_batch_size,
    top_eigenvectors,
)
from taskgroup.estimate.settings import (
    GradientEstimateSettings,
    ProjectionSettings,
    batch_memory_mb,
)
from taskgroup.estimate.valuers import (
    gradient_valuer,
    project_data,
    projected_table,
    splits_from_table,
)
from taskgroup.models.network import MultiHeadNet, save_checkpoint
from taskgroup.resources import PROJECTION_BATCH_EXAMPLES, PROJECTION_BYTES
from taskgroup.stages.estimate import project_gradients, read_gradient_valuer

SECTION = {"structure": "kronecker", "dim": 16, "nonzeros": 3, "kind": "gaussian", "seed": 4,
           "preconditioner": "none"}
SETTINGS = {
    "kronecker": ProjectionSettings("kronecker", "gaussian", 4, dim=30, nonzeros=None),
    "dense": ProjectionSettings("dense", "rademacher", 5, dim=17, nonzeros=None),
    "sparse": ProjectionSettings("sparse", "rademacher", 6, dim=25, nonzeros=3),
}


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = MultiHeadNet(n_features=5, n_tasks=3, hidden_sizes=[6, 4])
    features = torch.randn(9, 5)
    task_index = torch.tensor([0, 1, 2, 0, 1, 2, 2, 1, 0])
    return model, features, task_index


def test_every_structure_satisfies_the_protocol_with_one_project_signature(tiny):
    model, _, _ = tiny
    expected = inspect.signature(Projector.project)
    kind = LayerProjector
    for structure in SETTINGS:
        projector = make_projector(model, SETTINGS[structure])
        assert type(projector) is kind and isinstance(projector, Projector)
        assert not projector.exact
        assert inspect.signature(kind.project) == expected
        for name in ("shift_norms", "describe"):
            assert inspect.signature(getattr(kind, name)) == inspect.signature(
                getattr(Projector, name)
            ), name
        # to() returns the projector itself, annotated with its own class
        assert inspect.signature(kind.to).parameters == inspect.signature(
            Projector.to
        ).parameters


@pytest.mark.parametrize("structure", list(SETTINGS))
def test_from_description_rebuilds_an_equal_projector_with_identical_projections(
    tiny, structure
):
    model, features, task_index = tiny
    projector = make_projector(model, SETTINGS[structure])
    description = projector.describe()
    assert description == SETTINGS[structure].description()
    rebuilt = from_description(model, description)
    assert rebuilt == projector and rebuilt is not projector
    z, outputs = project_examples(model, projector, features, task_index, batch_size=4)
    again, outputs_again = project_examples(model, rebuilt, features, task_index, batch_size=4)
    assert torch.equal(z, again) and torch.equal(outputs, outputs_again)
    shifts = torch.randn(3, projector.dim, dtype=torch.float64)
    assert torch.equal(projector.shift_norms(shifts), rebuilt.shift_norms(shifts))
    torch.testing.assert_close(outputs, model(features, task_index).detach())
    # another seed is another projector
    other = from_description(model, {**description, "seed": description["seed"] + 1})
    assert other != projector
    assert not torch.equal(project_examples(model, other, features, task_index, 4)[0], z)


@pytest.mark.parametrize("structure", list(SETTINGS))
def test_every_structure_projects_the_same_gradients(structure):
    """At dim >= p the gradients are kept exactly; a projection to fewer columns preserves
    their inner products in expectation only, and gives the same network outputs."""
    torch.manual_seed(0)
    model = MultiHeadNet(n_features=30, n_tasks=3, hidden_sizes=[40])
    features, task_index = torch.randn(9, 30), torch.tensor([0, 1, 2, 0, 1, 2, 2, 1, 0])
    exact = make_projector(model, ProjectionSettings(structure, "gaussian", 0, 5000,
                                                     SETTINGS[structure].nonzeros))
    assert exact.exact
    projected = make_projector(model, ProjectionSettings(structure, "gaussian", 0, 1000,
                                                         SETTINGS[structure].nonzeros))
    assert not projected.exact and projected.dim <= 1000
    z_exact, outputs_exact = project_examples(model, exact, features, task_index, 4096)
    z, outputs = project_examples(model, projected, features, task_index, 4096)
    assert torch.equal(outputs_exact, outputs)
    gram = z_exact @ z_exact.T
    scale = gram.diagonal().sqrt()
    error = (z @ z.T - gram) / torch.outer(scale, scale)
    # 1000 of 1363 columns, of which 30 per head (41 parameters): errors of order
    # 1/sqrt(30) at most
    assert error.abs().max() < 0.4 and error.abs().mean() < 0.1


def test_project_gradients_params_hold_only_the_settings_the_structure_uses():
    kronecker = ProjectionSettings.from_mapping(SECTION).description()
    assert kronecker == {"dim": 16, "kind": "gaussian", "preconditioner": "none", "seed": 4,
                         "structure": "kronecker"}
    assert list(kronecker) == sorted(kronecker)
    assert ProjectionSettings.from_mapping({**SECTION, "nonzeros": 8}).description() == kronecker
    assert ProjectionSettings.from_mapping({**SECTION, "dim": 8}).description() != kronecker
    adam = {**SECTION, "preconditioner": "adam"}
    assert ProjectionSettings.from_mapping(adam).description() != kronecker
    sparse = {**SECTION, "structure": "sparse"}
    description = ProjectionSettings.from_mapping(sparse).description()
    assert description == {
        "dim": 16, "kind": "gaussian", "nonzeros": 3, "preconditioner": "none", "seed": 4,
        "structure": "sparse",
    }
    assert ProjectionSettings.from_mapping(description) == ProjectionSettings.from_mapping(sparse)


def test_bad_projection_settings_are_rejected():
    with pytest.raises(ValueError, match="projection.structure = 'blocks'"):
        ProjectionSettings("blocks", "gaussian", 0, dim=3, nonzeros=None)
    with pytest.raises(ValueError, match="projection.kind = 'uniform'"):
        ProjectionSettings("dense", "uniform", 0, dim=3, nonzeros=None)
    with pytest.raises(ValueError, match="projection.dim = 0; expected a positive size"):
        ProjectionSettings("dense", "gaussian", 0, dim=0, nonzeros=None)
    with pytest.raises(ValueError, match="projection.nonzeros = None: structure sparse needs"):
        ProjectionSettings("sparse", "gaussian", 0, dim=3, nonzeros=None)
    with pytest.raises(ValueError, match="projection.nonzeros = 2 is set, but structure dense"):
        ProjectionSettings("dense", "gaussian", 0, dim=3, nonzeros=2)
    with pytest.raises(ValueError, match="projection.preconditioner = 'adagrad'; expected one"):
        ProjectionSettings("dense", "gaussian", 0, dim=3, nonzeros=None, preconditioner="adagrad")
    with pytest.raises(KeyError, match="dim"):
        ProjectionSettings.from_mapping({"structure": "kronecker", "kind": "gaussian", "seed": 0})


def test_the_settings_module_imports_without_torch():
    """The rule files build project_gradients' params from it at parse time."""
    code = (
        "import sys; import taskgroup.estimate.settings; "
        "sys.exit('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def planted(tmp_path):
    examples, tasks = generate_planted(small_spec(n_groups=2, tasks_per_group=2))
    data = build_task_data(examples, tasks)
    torch.manual_seed(1)
    model = MultiHeadNet(data.n_features, data.n_tasks, [4])
    paths = {name: tmp_path / f"{name}.parquet" for name in ("examples", "tasks")}
    paths["model"] = tmp_path / "model.pt"
    write_table(examples, paths["examples"])
    write_table(tasks, paths["tasks"])
    save_checkpoint(model, data.task_names, paths["model"])
    return paths, data, model


@pytest.mark.parametrize("structure", list(SETTINGS))
def test_projection_stage_tables_are_reproducible_and_rebuild_the_valuer(
    planted, tmp_path, structure
):
    paths, data, model = planted
    settings = SETTINGS[structure]
    outputs = {}
    for run in ("first", "second"):
        folder = tmp_path / run
        folder.mkdir()
        project_gradients(
            paths["examples"], paths["tasks"], paths["model"], folder / "projected.parquet",
            folder / "projection.parquet", settings, memory_mb=0.1,
        )
        outputs[run] = folder
    for name in ("projected.parquet", "projection.parquet"):  # no wall-clock column
        assert (outputs["first"] / name).read_bytes() == (outputs["second"] / name).read_bytes()
    row = read_table(outputs["first"] / "projection.parquet", PROJECTION).iloc[0]
    assert "seconds" not in row.index
    assert pd.isna(row["nonzeros"]) == (structure != "sparse")
    assert row["dim"] == settings.dim and row["projected_dim"] <= settings.dim
    assert from_description(model, row) == make_projector(model, settings)
    assert row["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert row["theta_norm"] == pytest.approx(parameter_norm(model))

    # the projected table holds exactly what project_data computes, and reads back to it
    projector = make_projector(model, settings)
    # the batch the stage derived from its memory (a matrix product's rounding may depend
    # on the batch's size)
    batch = projection_batch_size(
        projector, batch_memory_mb(0.1), PROJECTION_BYTES, PROJECTION_BATCH_EXAMPLES
    )
    assert batch < len(data.splits["train"].labels)
    splits = project_data(model, projector, data, batch_size=batch)
    table = read_table(outputs["first"] / "projected.parquet", PROJECTED)
    pd.testing.assert_frame_equal(table, projected_table(splits, data.task_names))
    loaded = splits_from_table(table, data.task_names, "cpu", data.types)
    for split in ("train", "val"):
        for field in ("z", "base", "labels", "task_index", "regression"):
            assert torch.equal(getattr(loaded[split], field), getattr(splits[split], field))

    # the stage's valuer and the library's valuer on the in-memory splits agree exactly
    estimate = GradientEstimateSettings(l2=0.1, newton_steps=2, max_relative_shift=0.01)
    subsets = pd.DataFrame({"subset_id": [0, 0, 1, 1, 1], "task": [
        data.task_names[0], data.task_names[1], data.task_names[1], data.task_names[2],
        data.task_names[3]]})
    names, from_files = read_gradient_valuer(
        outputs["first"] / "projected.parquet", outputs["first"] / "projection.parquet",
        paths["model"], paths["tasks"], estimate,
    )
    assert names == data.task_names
    in_memory = gradient_valuer(
        splits, projector, parameter_norm(model), data.task_names, data.types, estimate, "auto"
    )
    values = in_memory(subsets)
    pd.testing.assert_frame_equal(from_files(subsets), values)
    assert (values["relative_shift"] <= 0.01 + 1e-12).all()  # the cap of the settings
    uncapped = estimate_values(
        splits["train"], splits["val"], subsets, data.task_names,
        GradientEstimateSettings(l2=0.1, newton_steps=2, max_relative_shift=None),
        shift_norm=projector.shift_norms, theta_norm=parameter_norm(model),
        task_types=data.types,
    )
    assert (uncapped["relative_shift"] >= values["relative_shift"] - 1e-12).all()


def test_the_eigen_basis_is_fitted_orthonormal_and_keeps_the_most_gradient_energy():
    """"eigen" fits each block to the examples' gradient factors: its factors are
    orthonormal (so ||P w|| = ||w||, also for a projector rebuilt from its description),
    it keeps far more of the gradients' energy than a random projection of the same size
    keeps on average, the same fit gives the same bytes, and an unfitted one refuses to
    project."""
    torch.manual_seed(0)
    model = MultiHeadNet(n_features=30, n_tasks=3, hidden_sizes=[40])
    features = torch.randn(200, 30) @ torch.diag(torch.linspace(3.0, 0.1, 30))
    task_index = torch.arange(200) % 3
    settings = ProjectionSettings("eigen", "rademacher", 0, 300, None)
    projector = make_projector(model, settings)
    assert projector.needs_fit and not projector.exact and projector.dim <= 300
    with pytest.raises(ValueError, match="eigen: the basis was not fitted"):
        project_examples(model, projector, features, task_index, 64)
    examples = SplitTensors(features, (task_index == 1).float(), task_index)
    z_fit, outputs_fit = projector.fit(model, examples, batch_size=64)
    assert not projector.needs_fit
    for block in projector.blocks:
        for factor in (block.left, block.right):
            if factor is not None:
                torch.testing.assert_close(factor.T @ factor, torch.eye(factor.shape[1]),
                                           atol=1e-5, rtol=0)
    z, outputs = project_examples(model, projector, features, task_index, 64)
    # the fit's pass projects its examples from its own factors: the same bytes
    assert torch.equal(z_fit, z) and torch.equal(outputs_fit, outputs)
    exact = make_projector(model, ProjectionSettings("kronecker", "rademacher", 0, 10**5, None))
    g, _ = project_examples(model, exact, features, task_index, 64)
    n_parameters = sum(p.numel() for p in model.parameters())
    kept = float((z**2).sum() / (g**2).sum())
    # an orthonormal projection keeps at most all of it; a random one of d of p
    # columns keeps d / p of it on average (0.21 here; eigen keeps 0.76)
    assert projector.dim / n_parameters < 0.25 and 0.6 < kept <= 1.0 + 1e-6
    shifts = torch.randn(4, projector.dim, dtype=torch.float64)
    torch.testing.assert_close(projector.shift_norms(shifts), shifts.norm(dim=1))
    rebuilt = from_description(model, projector.describe())
    assert rebuilt.needs_fit
    torch.testing.assert_close(rebuilt.shift_norms(shifts), shifts.norm(dim=1))
    again = make_projector(model, settings)
    again.fit(model, examples, batch_size=17)
    z_again, _ = project_examples(model, again, features, task_index, 64)
    # another batch size sums the float32 moment products in another order: the basis,
    # and so z, move at the rounding level of float32 sums (1e-5 here)
    torch.testing.assert_close(z_again, z, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dim", [300, 56, 50])
def test_the_energy_projector_is_fitted_on_a_model_in_one_or_two_passes(dim):
    """Structure energy on a model: make_projector builds an EnergyProjector for a model
    of more than d parameters (a LayerProjector refuses to), whose fit projects its
    examples as project_examples does afterwards (d = 300 and 56: from the products with
    its candidate vectors that its choice computed on the factors its pass kept; at d = 56
    project_examples multiplies by fewer of the vectors, the ones the choice uses, and may
    round otherwise, so to float rounding; d = 50: the layers' widths exceed 2 d, so from a
    second pass, exactly), keeps d orthonormal
    columns holding at least the energy "eigen" keeps, with preconditioner adam too; the
    same fit gives the same bytes, a rebuilt one measures ||P w|| unfitted."""
    torch.manual_seed(0)
    model = MultiHeadNet(n_features=30, n_tasks=3, hidden_sizes=[40])
    features = torch.randn(200, 30) @ torch.diag(torch.linspace(3.0, 0.1, 30))
    task_index = torch.arange(200) % 3
    examples = SplitTensors(features, (task_index == 1).float(), task_index)
    exact = make_projector(model, ProjectionSettings("kronecker", "rademacher", 0, 10**5, None))
    g, _ = project_examples(model, exact, features, task_index, 64)
    with pytest.raises(ValueError, match="structure energy chooses its columns on the data"):
        LayerProjector(exact.layer_shapes, ProjectionSettings("energy", "rademacher", 0, dim,
                                                              None))
    for preconditioner in ("none", "adam"):
        settings = ProjectionSettings("energy", "rademacher", 0, dim, None, preconditioner)
        projector = make_projector(model, settings)
        assert projector.needs_fit and not projector.exact and projector.dim == dim
        # (with adam, the scales are missing first)
        with pytest.raises(ValueError, match="were not (chosen|fitted)"):
            project_examples(model, projector, features, task_index, 64)
        z_fit, outputs_fit = projector.fit(model, examples, batch_size=64)
        assert not projector.needs_fit and sum(projector.segments) == dim
        z, outputs = project_examples(model, projector, features, task_index, 64)
        if dim == 56:
            torch.testing.assert_close(z_fit, z)
        else:
            assert torch.equal(z_fit, z)
        assert torch.equal(outputs_fit, outputs)
        again = make_projector(model, settings)
        again.fit(model, examples, batch_size=64)
        assert torch.equal(project_examples(model, again, features, task_index, 64)[0], z)
        grid = make_projector(model, ProjectionSettings("eigen", "rademacher", 0, dim, None,
                                                        preconditioner))
        z_grid, _ = grid.fit(model, examples, batch_size=64)
        assert grid.dim <= dim and float((z**2).sum()) >= float((z_grid**2).sum())
        if preconditioner == "none":
            # orthonormal columns of the gradient space: z z^T is the Gram of g
            # restricted to them, so at most all of g's energy
            assert float((z**2).sum()) <= float((g**2).sum()) * (1 + 1e-5)
        shifts = torch.randn(4, dim, dtype=torch.float64)
        torch.testing.assert_close(projector.shift_norms(shifts), shifts.norm(dim=1))
        rebuilt = from_description(model, projector.describe())
        assert rebuilt == projector and rebuilt.needs_fit
        torch.testing.assert_close(rebuilt.shift_norms(shifts), shifts.norm(dim=1))
    # at d >= p it is the exact projection, like every structure
    assert make_projector(model, ProjectionSettings("energy", "rademacher", 0, 10**5,
                                                    None)).exact


def test_the_adam_preconditioner_scales_each_gradient_entry_by_its_factored_adam_scale():
    """With preconditioner "adam" and no projection (d = p), z(x) is the plain gradient with
    entry (i, j) of each layer times v_ij^(-1/4) in the rank-1 form R_i C_j / S of v, the
    mean squared loss gradient; the scales come from per-example gradients computed by
    autograd, on binary and regression tasks; the parameter norm is ||D^(1/2) theta||; an
    unfitted projector refuses to project or measure."""
    torch.manual_seed(0)
    model = MultiHeadNet(n_features=6, n_tasks=3, hidden_sizes=[5, 4])
    n = 60
    features, task_index = torch.randn(n, 6), torch.arange(n) % 3
    regression = task_index == 2
    labels = torch.where(regression, torch.randn(n), (torch.rand(n) < 0.5).float())
    examples = SplitTensors(features, labels, task_index, regression)
    plain = make_projector(model, ProjectionSettings("kronecker", "gaussian", 0, 10**5, None))
    adam = make_projector(
        model, ProjectionSettings("kronecker", "gaussian", 0, 10**5, None, "adam")
    )
    assert plain.exact and adam.exact and adam.needs_fit
    with pytest.raises(ValueError, match="preconditioner adam: the scales were not fitted"):
        project_examples(model, adam, features, task_index, 16)
    with pytest.raises(ValueError, match="preconditioner adam: the scales were not fitted"):
        adam.parameter_norm(model)
    adam.fit(model, examples, batch_size=16)
    assert not adam.needs_fit

    # by hand: per-example parameter gradients of the output, times l'(x)
    gradients = per_example_gradients(model, features, task_index)
    outputs = project_examples(model, plain, features, task_index, 16)[1]
    first, _ = loss_derivatives(outputs.double(), labels.double(), regression)
    linears = [index for index, layer in enumerate(model.trunk) if hasattr(layer, "weight")]
    names = [(f"trunk.{i}.weight", f"trunk.{i}.bias") for i in linears]
    names.append(("head_weight", "head_bias"))
    def quarter(sums):
        # a unit no example moves (a dead ReLU: R_i = 0, or C_j = 0 after it) gets scale 0
        return torch.where(sums > 0, sums, 1.0) ** -0.25 * (sums > 0)

    scales, thetas = [], []
    parameters = dict(model.named_parameters())
    for weight, bias in names:
        g = torch.cat([gradients[weight], gradients[bias].unsqueeze(-1)], dim=-1).double()
        v = ((first.view(-1, 1, 1) * g) ** 2).mean(dim=0)
        rows, columns, total = v.sum(dim=1), v.sum(dim=0), v.sum()
        scales.append(total**0.25 * torch.outer(quarter(rows), quarter(columns)))
        thetas.append(torch.cat([parameters[weight], parameters[bias].unsqueeze(-1)], dim=-1))
    flat = torch.cat([scale.flatten() for scale in scales]).float()

    z_plain, _ = project_examples(model, plain, features, task_index, 16)
    z_adam, outputs_adam = project_examples(model, adam, features, task_index, 7)
    torch.testing.assert_close(outputs_adam, outputs)
    torch.testing.assert_close(z_adam, z_plain * flat, rtol=1e-4, atol=1e-6)
    assert (flat == 0).any()  # the case of a unit no example moves is exercised
    expected = math.sqrt(sum(
        float(((theta.detach().double()[scale > 0] / scale[scale > 0]) ** 2).sum())
        for theta, scale in zip(thetas, scales)
    ))
    assert adam.parameter_norm(model) == pytest.approx(expected, rel=1e-5)
    assert plain.parameter_norm(model) == pytest.approx(parameter_norm(model))
    # a rebuilt projector carries the preconditioner, unfitted
    assert from_description(model, adam.describe()).needs_fit


def test_top_eigenvectors_of_a_moment_with_many_units_off_everywhere():
    """A layer whose units are mostly off on every example (a ReLU trunk after training)
    has a second moment with a large zero block, on which torch 2.13's float32 eigensolver
    fails to converge on 2 threads (this one; not on 1): the basis is the float64 one,
    the same on any thread count."""
    generator = torch.Generator().manual_seed(1)
    inputs = torch.relu(torch.randn(3000, 257, dtype=torch.float64, generator=generator) + 0.5)
    inputs[:, torch.randperm(257, generator=generator)[:186]] = 0
    moment = (30 * inputs).T @ (30 * inputs)
    vectors = top_eigenvectors(moment, 3)
    assert vectors.dtype == torch.float32 and vectors.shape == (257, 3)
    _, expected = torch.linalg.eigh(moment)
    expected = expected[:, -3:].flip(1)
    torch.testing.assert_close(vectors.double().T @ vectors.double(),
                               torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    # the same vectors up to sign, each signed by its entry of largest magnitude
    torch.testing.assert_close((vectors.double().T @ expected).abs(),
                               torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    assert (vectors.gather(0, vectors.abs().argmax(dim=0, keepdim=True)) > 0).all()


def test_top_eigenvectors_past_the_units_that_are_on_are_the_off_units_unit_vectors():
    """Units 1 and 3 are on (a rank-2 moment on them): the top two vectors are that block's,
    the next ones the unit vectors of the off units 0, 2, 4 in order; a moment of units
    all off gives unit vectors only."""
    moment = torch.zeros(5, 5, dtype=torch.float64)
    moment[1, 1], moment[3, 3], moment[1, 3] = 4.0, 1.0, 1.0
    moment[3, 1] = 1.0
    vectors = top_eigenvectors(moment, 4)
    _, block = torch.linalg.eigh(moment[[1, 3]][:, [1, 3]])
    assert torch.allclose(vectors[[1, 3], 0].double().abs(), block[:, 1].abs(), atol=1e-7)
    assert torch.allclose(vectors[[1, 3], 1].double().abs(), block[:, 0].abs(), atol=1e-7)
    assert vectors[[0, 2, 4], :2].abs().max() == 0
    assert vectors[:, 2:].T.tolist() == [[1, 0, 0, 0, 0], [0, 0, 1, 0, 0]]
    assert torch.equal(top_eigenvectors(torch.zeros(3, 3), 2).T,
                       torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))


def test_the_valuer_fits_each_subset_in_its_own_metric_only_where_no_parameter_is_mixed(
    planted, caplog
):
    """step_scale "auto": a projection that keeps every parameter gives each subset its
    own metric (the values of step_scale "subset"), one that projects the fixed metric
    (the values of "fixed"); the log says which."""
    _, data, model = planted
    subsets = pd.DataFrame({"subset_id": [0, 0, 1, 1], "task": [
        data.task_names[0], data.task_names[1], data.task_names[1], data.task_names[3]]})
    auto = GradientEstimateSettings(l2=0.1, newton_steps=1, max_relative_shift=None,
                                    flow_steps=4, step_scale="auto")
    n_parameters = sum(p.numel() for p in model.parameters())
    for dim, chosen in ((n_parameters, "subset"), (n_parameters // 4, "fixed")):
        projector = make_projector(model, ProjectionSettings("dense", "gaussian", 2, dim, None))
        assert projector.exact == (chosen == "subset")
        splits = project_data(model, projector, data, batch_size=64)

        def values(settings):
            return gradient_valuer(splits, projector, parameter_norm(model), data.task_names,
                                   data.types, settings, "auto")(subsets)

        caplog.clear()
        with caplog.at_level(logging.INFO, logger="taskgroup.estimate.linearized"):
            resolved = values(auto)
        assert ("in its own metric" in caplog.text) == (chosen == "subset")
        pd.testing.assert_frame_equal(resolved, values(replace(auto, step_scale=chosen)))
        other = "fixed" if chosen == "subset" else "subset"
        assert (resolved["loss"] - values(replace(auto, step_scale=other))["loss"]).abs().max() > 0
