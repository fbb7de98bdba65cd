"""The default estimator ("gradient") writes the same bytes twice: the projected gradients,
the projection table and the per-subset estimates of two runs in two folders (the library
stages the workflow's project_gradients and estimate_subsets jobs call; the workflow-level
determinism test in test_resume.py uses the fine-tuning estimator)."""

from conftest import small_spec

from taskgroup.data.datasets.planted import generate_planted
from taskgroup.data.tables import SUBSET_VALUES, read_table, write_table
from taskgroup.estimate.settings import GradientEstimateSettings, ProjectionSettings
from taskgroup.stages.estimate import estimate_subsets, project_gradients
from taskgroup.stages.meta_init import train_meta_init
from taskgroup.stages.subsets import sample_subsets

OUTPUTS = ("projected.parquet", "projection.parquet", "chunk_0.parquet", "chunk_1.parquet")


def run_gradient_stages(folder, structure: str) -> None:
    """Preparation to per-subset estimates on 6 planted tasks: 8 subsets of 3 in 2 chunks."""
    folder.mkdir()
    examples, tasks = generate_planted(small_spec(tasks_per_group=2))
    write_table(examples, folder / "examples.parquet")
    write_table(tasks, folder / "tasks.parquet")
    train_meta_init(
        folder / "examples.parquet", folder / "tasks.parquet", folder / "model.pt",
        folder / "metrics.parquet", [4],
        {"epochs": 3, "lr": 0.01, "batch_size": 64, "weight_decay": 0.0}, seed=0,
    )
    sample_subsets(folder / "tasks.parquet", folder / "subsets.parquet",
                   folder / "pair_counts.parquet", size=3, count=8, seed=0)
    projection = {
        "kronecker": ProjectionSettings("kronecker", "rademacher", 0, dim=1024, nonzeros=None),
        "sparse": ProjectionSettings("sparse", "gaussian", 0, dim=32, nonzeros=3),
        # fitted to the examples by project_gradients; estimate_subsets rebuilds it unfitted
        "eigen": ProjectionSettings("eigen", "rademacher", 0, dim=32, nonzeros=None),
        "energy": ProjectionSettings("energy", "rademacher", 0, dim=32, nonzeros=None),
    }[structure]
    project_gradients(
        folder / "examples.parquet", folder / "tasks.parquet", folder / "model.pt",
        folder / "projected.parquet", folder / "projection.parquet", projection, 1024,
    )
    for chunk in (0, 1):
        estimate_subsets(
            folder / "projected.parquet", folder / "projection.parquet", folder / "model.pt",
            folder / "subsets.parquet", folder / "tasks.parquet",
            folder / f"chunk_{chunk}.parquet", chunk=chunk, chunk_size=4,
            settings=GradientEstimateSettings(l2=0.03, newton_steps=1, max_relative_shift=None),
        )


def test_two_gradient_runs_in_two_folders_write_byte_identical_parquet_files(tmp_path):
    for structure in ("kronecker", "sparse", "eigen", "energy"):
        first, second = tmp_path / f"{structure}_1", tmp_path / f"{structure}_2"
        run_gradient_stages(first, structure)
        run_gradient_stages(second, structure)
        for name in OUTPUTS:
            assert (first / name).read_bytes() == (second / name).read_bytes(), name
        values = read_table(first / "chunk_1.parquet", SUBSET_VALUES)
        assert sorted(values["subset_id"].unique()) == [4, 5, 6, 7]
        assert (values["estimator"] == "gradient").all() and values["loss"].notna().all()
        assert values["relative_shift"].notna().all()
