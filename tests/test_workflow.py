"""The workflow run for real by Snakemake on the tiny smoke config."""

import copy
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import (
    background_result,
    make_workdir,
    scheduled_jobs,
    shared_smoke_repository,
    smoke_config,
    snakemake,
    snakemake_in_repository,
    start_in_background,
)

pytestmark = pytest.mark.workflow

UPSTREAM_OF_CLUSTERING = {
    "prepare_dataset", "train_meta_init", "sample_subsets", "pair_design", "finetune_subsets",
    "gather_subset_values", "higher_order_affinity", "pairwise_affinity", "lookahead_affinity",
    "meta_init_affinity", "fit_surrogates", "forward_selection",
}
SOURCES = ["higher_order", "pairwise", "lookahead", "gradient_cosine", "covariance"]
METHODS = ["sdp", "spectral", "lloyd"]
CLUSTERED = [f"{source}-{method}" for source in SOURCES for method in METHODS]
GROUPINGS = CLUSTERED + ["naive_mtl", "stl", "planted", "random_0", "random_1"]


@pytest.fixture(scope="module")
def finished_run(shared_run):
    """A repository copy with the smoke workflow complete in it, shared with other modules
    (read-only here: only dry runs)."""
    return shared_run


def dry_run_with(repository, change) -> dict[str, int]:
    config = copy.deepcopy(smoke_config())
    change(config)
    variant = repository / "variant.yaml"
    variant.write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake_in_repository(repository, "-n", "--configfile", str(variant))
    return scheduled_jobs(result.stdout + result.stderr)


def test_full_run_writes_every_artifact(finished_run):
    results = finished_run / "results" / "smoke"
    summary = pd.read_parquet(results / "evaluation" / "summary.parquet").set_index("grouping")
    assert summary.index.tolist() == GROUPINGS + ["random_mean"]
    assert summary["n_groups"].to_dict() == {
        **{name: 3 for name in CLUSTERED}, "naive_mtl": 1, "stl": 9, "planted": 3,
        "random_0": 3, "random_1": 3, "random_mean": 3,
    }
    assert (summary["n_seeds"] == 2).all()
    assert summary["mean_test_metric"].between(0, 1).all()
    assert summary.loc["planted", "ari_vs_planted"] == 1.0
    assert summary.loc["naive_mtl", "gain_vs_naive_mtl"] == 0.0
    assert pd.isna(summary.loc["naive_mtl", "within_spread"])
    random = summary.loc[["random_0", "random_1"], "mean_test_metric"]
    assert summary.loc["random_mean", "mean_test_metric"] == pytest.approx(random.mean())
    per_task = pd.read_parquet(results / "evaluation" / "per_task.parquet")
    assert len(per_task) == len(GROUPINGS) * 2 * 9
    assert set(per_task.columns) >= {"grouping", "variant", "seed", "task", "cluster", "group_key",
                                     "test_loss", "test_metric"}
    # a group shared by several groupings is trained once: one model per distinct task set,
    # trained by the batch its key picks (evaluation.training_jobs = 2 batches)
    keys = per_task["group_key"].unique()
    final = results / "final" / "plain"
    assert sorted(keys) == sorted(p.name for p in final.iterdir() if p.is_dir())
    for key in keys:
        assert sorted(p.name for p in (final / key).iterdir()) == [
            "fingerprint.txt", "model_seed0.pt", "model_seed1.pt", "results.parquet"]
    batches = {p.name: pd.read_parquet(p) for p in final.glob("batch_*.parquet")}
    assert sorted(batches) == ["batch_0.parquet", "batch_1.parquet"]
    assert sorted(pd.concat(batches.values())["group_key"].unique()) == sorted(keys)
    for name, table in batches.items():
        assert {int(key, 16) % 2 for key in table["group_key"]} == {int(name[6])}
    for design, n_subsets in (("random", 30), ("pairs", 9 + 36)):
        values = pd.read_parquet(results / "subset_values" / "finetune" / f"{design}.parquet")
        assert values["subset_id"].nunique() == n_subsets
        assert (values["design"] == design).all()
    for source in SOURCES:
        affinity = pd.read_parquet(results / "affinity" / f"{source}.parquet")
        assert len(affinity) == 81
        normalized = affinity.pivot(index="task_i", columns="task_j", values="normalized")
        np.testing.assert_allclose(normalized.to_numpy(), normalized.to_numpy().T)
    objective = pd.read_parquet(results / "clustering" / "objective.parquet")
    assert len(objective) == len(CLUSTERED) and np.isfinite(objective["average_density"]).all()
    forward = pd.read_parquet(results / "subset_values" / "finetune" / "forward.parquet")
    assert (forward["design"] == "forward").all() and forward["subset_id"].nunique() >= 9
    selection = pd.read_parquet(results / "surrogates" / "forward_selection.parquet")
    assert selection["target"].nunique() == 9 and selection["size"].max() <= 3
    comparison = pd.read_parquet(results / "surrogates" / "forward_comparison.parquet")
    assert len(comparison) == 9 and comparison["jaccard"].between(0, 1).all()
    scores = pd.read_parquet(results / "surrogates" / "negative_transfer.parquet")
    overall = scores[scores["level"] == "overall"].iloc[0]
    assert overall["n_pairs"] == 72 and 0 <= overall["f1"] <= 1
    for figure in (
        "evaluation/affinity_heatmap.png", "evaluation/gain_over_naive_mtl.png",
        "clustering/objective.png", "surrogates/coefficients.png",
    ):
        assert (results / figure).stat().st_size > 10_000
    assert (results / "logs" / "train_meta_init.log").read_text().count("meta-initialization")
    # what the run decided, for the report: the preparation's rows, then the run's
    decided = pd.read_parquet(results / "evaluation" / "run_decisions.parquet")
    values = decided.groupby("item", sort=False)["value"].apply(list).to_dict()
    assert list(values)[:2] == ["dataset_kind", "feature"] and values["dataset_kind"] == ["planted"]
    assert len(values["task"]) == 9 and values["estimator"] == ["finetune"]
    assert values["random_design"] == ["30 subsets of 3 tasks"]
    assert (results / "evaluation" / "run_decisions.html").stat().st_size > 0


def test_complete_run_has_nothing_left_to_do(finished_run):
    result = snakemake_in_repository(finished_run, "-n")
    assert scheduled_jobs(result.stdout + result.stderr) == {}


def test_changing_n_clusters_reruns_only_clustering_and_what_follows(finished_run):
    jobs = dry_run_with(finished_run, lambda c: c["clustering"].update(n_clusters=2))
    assert "cluster_tasks" in jobs
    assert not UPSTREAM_OF_CLUSTERING & set(jobs), jobs
    assert set(jobs) <= {"cluster_tasks", "gather_clustering", "random_grouping",
                         "train_group_models", "evaluate_groupings", "plot_figures", "recommend",
                         "all"}


def test_finetune_lr_auto_chooses_the_rate_before_every_fine_tuning(finished_run):
    """Estimator finetune with lr "auto": the rate's choice joins the DAG, and every job that
    fine-tunes subsets (both designs' chunks, the forward selection) waits for it; nothing
    upstream of the fine-tunings reruns."""
    jobs = dry_run_with(finished_run, lambda c: c["finetune"].update(lr="auto"))
    assert jobs.get("calibrate_finetune") == 1
    assert jobs.get("finetune_subsets") == 2 + 3 and "forward_selection" in jobs
    assert not {"prepare_dataset", "train_meta_init", "sample_subsets", "pair_design"} & set(
        jobs), jobs


def test_changing_finetune_epochs_keeps_the_meta_initialization(finished_run):
    jobs = dry_run_with(finished_run, lambda c: c["finetune"].update(epochs=3))
    assert jobs.get("finetune_subsets") == 2 + 3  # both designs, 15 subsets per chunk
    assert not {"prepare_dataset", "train_meta_init", "sample_subsets"} & set(jobs), jobs


def test_changing_final_epochs_retrains_only_group_models(finished_run):
    jobs = dry_run_with(finished_run, lambda c: c["final"].update(epochs=5))
    groups = finished_run / "results" / "smoke" / "final" / "plain"
    assert jobs.get("train_group_models") == len(list(groups.glob("batch_*.parquet"))) == 2
    assert set(jobs) == {
        "train_group_models", "evaluate_groupings", "plot_figures", "recommend", "all",
    }


def test_adding_a_training_variant_trains_only_that_variant(finished_run):
    jobs = dry_run_with(
        finished_run,
        lambda c: c.setdefault("training_options", {}).update(
            final={"variants": ["plain", "reweighted"]}
        ),
    )
    groups = finished_run / "results" / "smoke" / "final" / "plain"
    assert jobs.get("train_group_models") == len(list(groups.glob("batch_*.parquet"))) == 2
    assert set(jobs) == {"train_group_models", "evaluate_groupings", "plot_figures",
                         "plot_variants", "recommend", "all"}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["clustering"].update(colour="red"), "Additional properties are not allowed"),
        (lambda c: c["subsets"].update(size=10), r"subsets.size \(alpha\) = 10 .* k = 9"),
        (lambda c: c["clustering"].update(n_clusters=12), "clustering.n_clusters = 12 exceeds"),
        (lambda c: c["dataset"]["planted"].update(n_val=-1), "-1 is less than the minimum"),
    ],
    ids=["unknown-key", "alpha-above-k", "clusters-above-k", "negative-samples"],
)
def test_bad_config_fails_at_parse_time_with_a_clear_message(tmp_path, change, message):
    config = smoke_config()
    change(config)
    workdir = make_workdir(tmp_path, config)
    result = snakemake(workdir, check=False)
    assert result.returncode != 0
    assert pytest.importorskip("re").search(message, result.stdout + result.stderr)
    assert not (workdir / "results").exists()


def use_gradient_estimator(config: dict) -> None:
    """The gradient estimator with l2 and the fine-tuning rate "auto", chosen on every subset
    of the design (10 per task: "auto" needs 3 or more held-out subsets per task)."""
    config["estimator"] = "gradient"
    config["gradient_estimate"]["l2"] = "auto"
    config["finetune"]["lr"] = "auto"
    config["validation"]["n_subsets"] = config["subsets"]["count"]


def switch_to_gradient(workdir: Path, tmp_path_factory) -> dict:
    """Copy the completed shared run (results and Snakemake's records included) to
    ``workdir``/repo, switch it to the gradient estimator and run it; the jobs of its dry run
    and the repository."""
    repository = workdir / "repo"
    shutil.copytree(shared_smoke_repository(tmp_path_factory), repository, symlinks=True)
    jobs = dry_run_with(repository, use_gradient_estimator)
    config = smoke_config()
    use_gradient_estimator(config)
    (repository / "gradient.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake_in_repository(repository, "--configfile", "gradient.yaml")
    return {"repository": repository, "dry_run": jobs}


def start_gradient_run(tmp_path_factory) -> None:
    """Start the gradient estimator's run (it waits for the shared run)."""
    start_in_background("gradient", tmp_path_factory, switch_to_gradient, tmp_path_factory)


BACKGROUND_RUNS = {"gradient_run": start_gradient_run}  # started early, see conftest.py


@pytest.fixture(scope="module")
def gradient_run(tmp_path_factory):
    start_gradient_run(tmp_path_factory)
    return background_result("gradient")


def test_gradient_estimator_reuses_the_meta_initialization_and_runs_end_to_end(gradient_run):
    repository, jobs = gradient_run["repository"], gradient_run["dry_run"]
    assert {"project_gradients", "calibrate_finetune", "calibrate_estimate",
            "estimate_subsets", "validate_estimator"} <= set(jobs)
    assert not {"prepare_dataset", "train_meta_init", "sample_subsets",
                "finetune_subsets"} & set(jobs), jobs
    results = repository / "results" / "smoke"
    values = pd.read_parquet(results / "subset_values" / "gradient" / "random.parquet")
    assert (values["estimator"] == "gradient").all() and len(values) == 30 * 3
    assert values["relative_shift"].between(0, 1).all()
    projection = pd.read_parquet(results / "gradients" / "projection.parquet").iloc[0]
    assert projection["projected_dim"] == projection["n_parameters"]  # exact at this size
    validation = pd.read_parquet(results / "validation" / "summary.parquet").set_index(
        "estimator"
    )
    assert set(validation.index) == {"gradient", "finetune_other_seed", "no_change"}
    assert (validation["n_subsets"] == 30).all()
    assert np.isfinite(validation["median_rel_error"]).all()
    # l2 "auto": the candidates' curve against the second seed, one chosen, and the
    # estimate made with it
    l2_curve = pd.read_parquet(results / "validation" / "l2_curve.parquet")
    assert l2_curve["l2"].tolist() == [
        0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0
    ]
    assert (l2_curve["n_subsets"] == 30).all() and l2_curve["chosen"].sum() == 1
    top = l2_curve.loc[l2_curve["within_task_pearson"].idxmax()]
    tied = l2_curve[l2_curve["within_task_pearson"]
                    >= top["within_task_pearson"] - top["within_task_pearson_se"]]
    best = tied.loc[tied["median_rel_error"].idxmin()]
    assert best["chosen"] and validation.loc["gradient", "l2"] == best["l2"]
    assert np.isnan(validation.loc["no_change", "l2"])
    log = (results / "logs" / "estimate_subsets" / "random_0.log").read_text()
    assert f"gradient_estimate.l2 auto: {best['l2']:g}" in log
    # finetune.lr "auto": the candidates' real-vs-real agreement, the largest rate within a
    # standard error of the best chosen, and the held-out fine-tunings made with it
    lr_curve = pd.read_parquet(results / "validation" / "lr_curve.parquet")
    assert lr_curve["lr"].tolist() == [0.0003, 0.001, 0.003, 0.01]
    assert (lr_curve["n_subsets"] == 30).all() and lr_curve["chosen"].sum() == 1
    top = lr_curve.loc[lr_curve["noise_floor"].idxmax()]
    tied = lr_curve[lr_curve["noise_floor"] >= top["noise_floor"] - top["noise_floor_se"]]
    chosen_lr = lr_curve.loc[lr_curve["chosen"], "lr"].item()
    assert chosen_lr == tied["lr"].max()
    assert lr_curve["median_rel_change"].is_monotonic_increasing  # larger steps move more
    for job in ("calibrate_estimate", "validate_estimator"):
        assert f"finetune.lr auto: {chosen_lr:g}" in (results / "logs" / f"{job}.log").read_text()
    assert "(4 of 4 rates" in (results / "logs" / "calibrate_finetune.log").read_text()
    # (How close the estimate is depends on gradient_estimate.l2 matching the fine-tuning
    # protocol; benchmarks/estimation.py measures it on the default config.)
    curve = pd.read_parquet(results / "validation" / "validity_curve.parquet")
    assert sorted(curve["scale"].unique()) == [0.5, 1.0, 2.0]
    by_scale = curve.groupby("scale")["relative_error"].median()
    assert by_scale[0.5] < by_scale[2.0]  # the expansion degrades away from theta*
    summary = pd.read_parquet(results / "evaluation" / "summary.parquet")
    assert summary["grouping"].tolist() == GROUPINGS + ["random_mean"]


def test_the_l2_choice_reruns_with_what_it_depends_on(gradient_run):
    """Dry runs against the finished gradient run: the validity curve's scales do not touch
    the l2 choice or the estimates; a number for l2 drops the estimates' wait for it, and
    a number for the fine-tuning rate drops the rate's choice."""
    repository = gradient_run["repository"]

    def change(edit):
        def apply(config):
            use_gradient_estimator(config)
            edit(config)
        return set(dry_run_with(repository, apply))

    assert change(lambda c: None) == set()
    scales = change(lambda c: c["validation"].update(scales=[0.5, 1.0]))
    assert "validate_estimator" in scales
    assert not {"calibrate_estimate", "estimate_subsets"} & scales, scales
    fixed = change(lambda c: c["gradient_estimate"].update(l2=0.05))
    assert {"calibrate_estimate", "estimate_subsets", "validate_estimator"} <= fixed
    assert "calibrate_finetune" not in fixed, fixed
    # the rate's candidates rerun its choice and what fine-tunes with it; a fixed rate
    # drops the choice
    rates = change(lambda c: c["finetune"].update(lr_candidates=[0.01, 0.001]))
    assert {"calibrate_finetune", "calibrate_estimate", "validate_estimator"} <= rates
    fixed_rate = change(lambda c: c["finetune"].update(lr=0.01))
    assert {"calibrate_estimate", "validate_estimator"} <= fixed_rate
    assert "calibrate_finetune" not in fixed_rate, fixed_rate
