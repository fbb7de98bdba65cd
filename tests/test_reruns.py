"""What Snakemake reruns after a change, checked with dry runs against one completed run.

Every stage's config parameters, library code and inputs: a change reruns the stage and
everything downstream of it, and nothing upstream; the same bytes with a newer time rerun
nothing. Plus reuse of the meta-initialization across working directories (--cache).
"""

import os
import shutil

import pytest
import yaml
from workflow_helpers import (
    make_workdir,
    scheduled_jobs,
    smoke_config,
    snakemake,
    snakemake_in_repository,
)

pytestmark = pytest.mark.workflow

# rule -> rules that read its outputs (estimator "finetune", as in the smoke config)
READERS = {
    "prepare_dataset": {
        "train_meta_init", "sample_subsets", "pair_design", "finetune_subsets",
        "higher_order_affinity", "pairwise_affinity", "lookahead_affinity", "meta_init_affinity",
        "fit_surrogates", "cluster_tasks", "baseline_grouping", "train_group_models",
        "evaluate_groupings", "plot_figures", "forward_selection", "recommend",
    },
    "train_meta_init": {"finetune_subsets", "meta_init_affinity", "forward_selection"},
    "sample_subsets": {"finetune_subsets", "fit_surrogates", "evaluate_groupings"},
    "pair_design": {"finetune_subsets"},
    "finetune_subsets": {"gather_subset_values"},
    "gather_subset_values": {
        "higher_order_affinity", "pairwise_affinity", "fit_surrogates", "recommend",
    },
    "higher_order_affinity": {"cluster_tasks", "plot_figures"},
    "pairwise_affinity": {"cluster_tasks"},
    "lookahead_affinity": {"cluster_tasks"},
    "meta_init_affinity": {"cluster_tasks"},
    "forward_selection": {"fit_surrogates"},
    "fit_surrogates": set(),
    "cluster_tasks": {
        "random_grouping", "gather_clustering", "evaluate_groupings", "plot_figures",
    },
    "gather_clustering": set(),
    "baseline_grouping": {"evaluate_groupings"},
    "random_grouping": {"evaluate_groupings"},
    "train_group_models": {"evaluate_groupings"},
    "evaluate_groupings": {"plot_figures", "recommend"},
    "plot_figures": set(),
    "recommend": set(),
}


CHECKPOINTS = {"cluster_tasks", "baseline_grouping", "random_grouping"}


def downstream(*rules: str) -> set[str]:
    """The rules a dry run schedules after a change to ``rules``: they, every rule that
    depends on them, and the target rule ``all``. When a checkpoint reruns, the group models
    are not listed: which groups exist is decided after the checkpoint has run (each model is
    named by the hash of its tasks, and only groups without a model are then trained)."""
    found, pending = set(), list(rules)
    while pending:
        rule = pending.pop()
        if rule not in found:
            found.add(rule)
            pending += READERS[rule]
    if found & CHECKPOINTS and "train_group_models" not in rules:
        found.discard("train_group_models")
    return found | {"all"}


def training_batches(repository) -> int:
    final = repository / "results" / "smoke" / "final" / "plain"
    return len(list(final.glob("batch_*.parquet")))


@pytest.fixture(scope="module")
def repository(shared_run):
    """A repository copy with the smoke workflow run to completion (shared across modules)."""
    return shared_run


def dry_run(repository, *args) -> dict[str, int]:
    result = snakemake_in_repository(repository, "-n", *args)
    return scheduled_jobs(result.stdout + result.stderr)


def dry_run_with(repository, change) -> dict[str, int]:
    config = yaml.safe_load((repository / "config" / "config.yaml").read_text())
    change(config)
    variant = repository / "variant.yaml"
    variant.write_text(yaml.safe_dump(config, sort_keys=False))
    return dry_run(repository, "--configfile", str(variant))


def test_complete_run_has_nothing_left_to_do(repository):
    assert dry_run(repository) == {}


@pytest.mark.parametrize(
    "stages, change, untouched",
    [
        (["prepare_dataset"], lambda c: c["dataset"]["planted"].update(seed=1), set()),
        # the lookahead affinity trains with the meta-initialization's settings
        (["train_meta_init", "lookahead_affinity"], lambda c: c["meta_init"].update(epochs=21),
         set()),
        # only the random design changes: the pair design's values and affinity stay
        (["sample_subsets"], lambda c: c["subsets"].update(seed=1), {"pairwise_affinity"}),
        # forward selection fine-tunes its subsets with the same settings
        (["finetune_subsets", "forward_selection"], lambda c: c["finetune"].update(lr=0.02),
         set()),
        (["forward_selection"],
         lambda c: c["subsets"]["forward_selection"].update(min_improvement=0.01), set()),
        # a non-primary source: the random partitions follow the primary grouping only
        (["lookahead_affinity"], lambda c: c["affinity"]["lookahead"].update(every=3),
         {"random_grouping"}),
        (["fit_surrogates"], lambda c: c["surrogates"].update(alpha=0.1), set()),
        (["cluster_tasks"], lambda c: c["clustering"].update(seed=1), set()),
        (["train_group_models"], lambda c: c["final"].update(lr=0.02), set()),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else "",
)
def test_a_parameter_change_reruns_its_stage_and_what_follows_only(
    repository, stages, change, untouched
):
    jobs = dry_run_with(repository, change)
    assert set(jobs) == downstream(*stages) - untouched, jobs
    if stages == ["sample_subsets"]:
        assert jobs["finetune_subsets"] == 2  # the random design's chunks only
    elif "finetune_subsets" in jobs:
        assert jobs["finetune_subsets"] == 2 + 3  # random design 30 / 15, pairs 45 / 15
    if stages == ["train_group_models"]:
        assert jobs["train_group_models"] == training_batches(repository) == 2


def test_library_edits_rerun_the_stages_that_import_the_library(repository, tmp_path):
    """Library files are inputs (code=) of the rules whose scripts import them: editing
    taskgroup/group/clustering.py reruns the stages of taskgroup/stages/cluster.py and what
    follows; the same bytes with a newer time rerun nothing; a touched script reruns its rule
    (Snakemake's own code trigger compares the script's time with the outputs')."""
    clone = tmp_path / "clone"
    shutil.copytree(repository, clone, symlinks=True)  # results and metadata included
    assert dry_run(clone) == {}, "a copied repository with its results is up to date"

    library = clone / "taskgroup" / "group" / "clustering.py"
    os.utime(library)
    assert dry_run(clone) == {}, "a newer library file with the same bytes reruns nothing"

    script = clone / "workflow_scripts" / "cluster_tasks.py"
    times = script.stat()
    os.utime(script)
    assert set(dry_run(clone)) == downstream("cluster_tasks")
    os.utime(script, ns=(times.st_atime_ns, times.st_mtime_ns))

    library.write_text(library.read_text() + "\n\n# an edit\n")
    jobs = dry_run(clone)
    # every rule whose script imports taskgroup.stages.cluster (which imports
    # taskgroup.group.clustering) reruns; the affinity stages do not import it.
    assert set(jobs) == downstream("cluster_tasks", "baseline_grouping"), jobs
    assert not {"prepare_dataset", "train_meta_init", "sample_subsets", "finetune_subsets",
                "gather_subset_values", "higher_order_affinity", "pairwise_affinity"} & set(jobs)


def test_touching_inputs_with_identical_content_reruns_nothing(repository):
    data = repository / "results" / "smoke" / "data"
    for name in ("examples.parquet", "tasks.parquet"):
        os.utime(data / name)
    chunks = repository / "results" / "smoke" / "subset_values" / "finetune" / "random"
    os.utime(chunks / "chunk_0.parquet")
    assert dry_run(repository) == {}


def test_meta_initialization_is_reused_from_the_cache_in_another_directory(
    repository, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("SNAKEMAKE_OUTPUT_CACHE", str(cache))
    target = "results/smoke/meta_init/model.pt"
    first = make_workdir(tmp_path / "first")
    result = snakemake(first, "--cache", "--", target)
    assert f"Moving output file {target} to cache." in result.stdout + result.stderr
    second = make_workdir(tmp_path / "second")
    result = snakemake(second, "--cache", "--", target)
    assert f"Symlinking output file {target} from cache." in result.stdout + result.stderr
    meta_init_log = second / "results" / "smoke" / "logs" / "train_meta_init.log"
    assert "meta-initialization" not in meta_init_log.read_text(), "it was trained again"
    reused = (second / target).read_bytes()
    assert reused == (first / target).read_bytes()
    # the same bytes as the model trained without the cache in the shared run
    assert reused == (repository / target).read_bytes()
    changed = smoke_config()
    changed["meta_init"]["epochs"] = 21
    third = make_workdir(tmp_path / "third", changed)
    result = snakemake(third, "--cache", "-n", "--", target)
    assert "from global between-workflow cache" not in result.stdout + result.stderr
