"""The projectors behind one interface: the Projector protocol, describe / from_description,
the settings a projection is built from, and the projection stage's tables."""

import inspect
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import small_spec

from taskgroup.data.datasets.planted import generate_planted
from taskgroup.data.examples import build_task_data
from taskgroup.data.tables import PROJECTED, PROJECTION, read_table, write_table
from taskgroup.estimate.linearized import estimate_values
from taskgroup.estimate.projection import (
    DenseProjector,
    KroneckerProjector,
    Projector,
    from_description,
    make_projector,
    parameter_norm,
    project_examples,
)
from taskgroup.estimate.settings import GradientEstimateSettings, ProjectionSettings
from taskgroup.estimate.valuers import (
    gradient_valuer,
    project_data,
    projected_table,
    splits_from_table,
)
from taskgroup.models.network import MultiHeadNet, save_checkpoint
from taskgroup.stages.estimate import project_gradients, read_gradient_valuer

SECTION = {"structure": "kronecker", "factor_dim": 3, "dim": 16, "kind": "gaussian",
           "seed": 4, "batch_size": 4096}
SETTINGS = {
    "kronecker": ProjectionSettings("kronecker", "gaussian", 4, factor_dim=3, dim=None),
    "dense": ProjectionSettings("dense", "rademacher", 5, factor_dim=None, dim=7),
}


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = MultiHeadNet(n_features=5, n_tasks=3, hidden_sizes=[6, 4])
    features = torch.randn(9, 5)
    task_index = torch.tensor([0, 1, 2, 0, 1, 2, 2, 1, 0])
    return model, features, task_index


def test_both_projectors_satisfy_the_protocol_with_one_project_signature(tiny):
    model, _, _ = tiny
    expected = inspect.signature(Projector.project)
    for structure, kind in (("kronecker", KroneckerProjector), ("dense", DenseProjector)):
        projector = make_projector(model, SETTINGS[structure])
        assert type(projector) is kind and isinstance(projector, Projector)
        assert inspect.signature(kind.project) == expected
        for name in ("shift_norms", "describe"):
            assert inspect.signature(getattr(kind, name)) == inspect.signature(
                getattr(Projector, name)
            ), name
        # to() returns the projector itself, annotated with its own class
        assert inspect.signature(kind.to).parameters == inspect.signature(
            Projector.to
        ).parameters


@pytest.mark.parametrize("structure", ["kronecker", "dense"])
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


def test_the_two_structures_project_the_same_gradients(tiny):
    """Kronecker factors at full size are the identity, so its inner products are exact; the
    dense projection of the same gradients preserves them in expectation only, but its
    outputs are the same network outputs."""
    model, features, task_index = tiny
    exact = make_projector(
        model, ProjectionSettings("kronecker", "rademacher", 0, factor_dim=64, dim=None)
    )
    dense = make_projector(model, ProjectionSettings("dense", "gaussian", 0, None, dim=4000))
    z_exact, outputs_exact = project_examples(model, exact, features, task_index, 4096)
    z_dense, outputs_dense = project_examples(model, dense, features, task_index, 4096)
    assert torch.equal(outputs_exact, outputs_dense)
    gram = z_exact @ z_exact.T
    scale = gram.diagonal().sqrt()
    error = (z_dense @ z_dense.T - gram) / torch.outer(scale, scale)
    assert error.abs().max() < 0.15  # dim 4000: JL error of order 1/sqrt(4000) per entry


def test_project_gradients_params_hold_only_the_settings_the_structure_uses():
    kronecker = ProjectionSettings.from_mapping(SECTION).description()
    assert kronecker == {"factor_dim": 3, "kind": "gaussian", "seed": 4, "structure": "kronecker"}
    assert list(kronecker) == sorted(kronecker)
    for change in ({"dim": 999}, {"batch_size": 1}):
        assert ProjectionSettings.from_mapping({**SECTION, **change}).description() == kronecker
    assert ProjectionSettings.from_mapping({**SECTION, "factor_dim": 8}).description() != kronecker
    dense = {**SECTION, "structure": "dense"}
    description = ProjectionSettings.from_mapping(dense).description()
    assert description == {"dim": 16, "kind": "gaussian", "seed": 4, "structure": "dense"}
    assert ProjectionSettings.from_mapping({**dense, "factor_dim": 999}).description() == (
        description
    )
    assert ProjectionSettings.from_mapping(description) == ProjectionSettings.from_mapping(dense)


def test_bad_projection_settings_are_rejected():
    with pytest.raises(ValueError, match="projection.structure = 'sparse'"):
        ProjectionSettings("sparse", "gaussian", 0, factor_dim=3, dim=None)
    with pytest.raises(ValueError, match="projection.kind = 'uniform'"):
        ProjectionSettings("dense", "uniform", 0, factor_dim=None, dim=3)
    with pytest.raises(ValueError, match="projection.dim = None: structure dense needs"):
        ProjectionSettings("dense", "gaussian", 0, factor_dim=None, dim=None)
    with pytest.raises(ValueError, match="projection.dim = 5 is set, but structure kronecker"):
        ProjectionSettings("kronecker", "gaussian", 0, factor_dim=3, dim=5)
    with pytest.raises(KeyError, match="factor_dim"):
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


@pytest.mark.parametrize("structure", ["kronecker", "dense"])
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
            folder / "projection.parquet", settings, batch_size=50,
        )
        outputs[run] = folder
    for name in ("projected.parquet", "projection.parquet"):  # no wall-clock column
        assert (outputs["first"] / name).read_bytes() == (outputs["second"] / name).read_bytes()
    row = read_table(outputs["first"] / "projection.parquet", PROJECTION).iloc[0]
    assert "seconds" not in row.index
    unused = "dim" if structure == "kronecker" else "factor_dim"
    assert pd.isna(row[unused])
    assert from_description(model, row) == make_projector(model, settings)
    assert row["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert row["theta_norm"] == pytest.approx(parameter_norm(model))

    # the projected table holds exactly what project_data computes, and reads back to it
    projector = make_projector(model, settings)
    splits = project_data(model, projector, data, batch_size=50)
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
