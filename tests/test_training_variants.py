"""The within-group training options run for real by Snakemake on 4 tasks: plain and
reweighted-and-aligned final training (both options in one variant keeps the run short;
the library tests cover each alone), the diagnostics and the meta-initialization's
options."""

from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import (
    background_result,
    make_workdir,
    smoke_config,
    snakemake,
    start_in_background,
)

from taskgroup.data.tables import GENERALIZATION_GAP, read_table

pytestmark = pytest.mark.workflow

VARIANTS = ["plain", "reweighted_aligned"]


def variants_config() -> dict:
    config = smoke_config()
    config["dataset"]["name"] = "variants"
    config["dataset"]["planted"].update(n_groups=2, tasks_per_group=2)
    config["subsets"].update(size=2, count=6, chunk_size=6)
    config["affinity"]["sources"] = ["higher_order"]
    config["surrogates"]["enabled"] = False
    config["clustering"].update(methods=["spectral"], n_clusters=2)
    config["final"]["epochs"] = 10
    config["evaluation"].update(baselines=["naive_mtl", "stl"], n_seeds=2)
    config["training_options"] = {
        "meta_init": {
            "reweighting": {"enabled": True, "rank": 2},
            "diagnostics": {"enabled": True, "every": 5},
        },
        "final": {
            "variants": VARIANTS,
            "reweighting": {"rank": 1},
            "alignment": {"epochs": 3, "lr": 0.001, "head_lr": 0.001},
            "diagnostics": {"enabled": True, "every": 5},
        },
    }
    return config


def run_variants(workdir: Path) -> Path:
    make_workdir(workdir, variants_config())
    snakemake(workdir)
    return workdir / "results" / "variants"


def start_variants_run(tmp_path_factory) -> None:
    """Start the run with every training variant (see conftest.py)."""
    start_in_background("variants", tmp_path_factory, run_variants)


BACKGROUND_RUNS = {"variants_run": start_variants_run}  # started early, see conftest.py


@pytest.fixture(scope="module")
def variants_run(tmp_path_factory):
    start_variants_run(tmp_path_factory)
    return background_result("variants")


def test_every_variant_is_summarized_and_compared_with_plain(variants_run):
    summary = pd.read_parquet(variants_run / "evaluation" / "summary.parquet")
    assert sorted(summary["variant"].unique()) == sorted(VARIANTS)
    assert len(summary) == 3 * 2  # (spectral clusters, naive MTL, STL) per variant
    for _, rows in summary.groupby("variant"):
        assert (rows.set_index("grouping").loc["naive_mtl", "gain_vs_naive_mtl"]) == 0.0
    comparison = pd.read_parquet(variants_run / "evaluation" / "variants.parquet")
    assert sorted(zip(comparison["grouping"], comparison["variant"])) == sorted(
        (grouping, variant) for grouping in ("higher_order-spectral", "naive_mtl", "stl")
        for variant in ("reweighted_aligned",)
    )
    assert comparison["n_seeds"].eq(2).all()
    plain = summary[summary["variant"] == "plain"].set_index("grouping")["mean_test_metric"]
    for _, row in comparison.iterrows():
        assert row["baseline_test_metric"] == pytest.approx(plain[row["grouping"]])
    changes = pd.read_parquet(variants_run / "evaluation" / "variant_changes.parquet")
    assert len(changes) == 3 * 4  # groupings x tasks
    changed = changes.set_index(["grouping", "task"])
    # one task alone has weight 1
    assert changed.loc["stl", "loss_weight"].to_numpy() == pytest.approx(1.0)
    mtl = changed.loc["naive_mtl"]
    assert mtl["loss_weight"].mean() == pytest.approx(1.0)
    assert mtl["loss_weight"].std() > 0.01 and (mtl["change"] != 0).any()
    assert (variants_run / "evaluation" / "variant_changes.png").stat().st_size > 10_000


def test_diagnostics_give_generalization_gaps_against_single_task_models(variants_run):
    gaps = read_table(variants_run / "evaluation" / "generalization_gap.parquet",
                      GENERALIZATION_GAP)
    assert sorted(gaps["variant"].unique()) == sorted(VARIANTS)
    naive = gaps[gaps["n_tasks"] == 4]
    assert len(naive) == 2 * 2 * 4  # variants x seeds x tasks of the naive MTL model
    assert gaps["gap"].notna().all() and gaps["stl_epoch"].ge(0).all()
    diagnostics = list((variants_run / "final").glob("*/*/diagnostics.parquet"))
    assert {path.parts[-3] for path in diagnostics} == set(VARIANTS)
    aligned = pd.concat(pd.read_parquet(path) for path in diagnostics
                        if path.parts[-3] == "reweighted_aligned")
    assert "alignment" in set(aligned["phase"])
    assert (variants_run / "evaluation" / "transfer_diagnostics.png").stat().st_size > 10_000
    weights = pd.read_parquet(variants_run / "meta_init" / "task_weights.parquet")
    assert len(weights) == 4 and weights["weight"].mean() == pytest.approx(1.0)
    meta = pd.read_parquet(variants_run / "meta_init" / "diagnostics.parquet")
    assert sorted(meta["epoch"].unique())[:3] == [0, 5, 10]
