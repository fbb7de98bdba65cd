"""Resuming after a crash, and determinism across working directories.

The smoke workflow is killed (SIGKILL to Snakemake and its jobs) while the per-subset
fine-tuning runs, then run again. The resumed run must redo only what was missing, leave no
partial file behind, and end with the same Parquet files, byte for byte, as the complete
shared run in another directory (which is also the determinism check).
"""

import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import (
    background_result,
    copy_repository,
    parquet_files,
    scheduled_jobs,
    snakemake_in_repository,
    start_in_background,
    start_snakemake_in_repository,
)

pytestmark = pytest.mark.workflow

# smoke config, chunks of 15 subsets: 30 random subsets, 9 singletons + 36 pairs
CHUNKS = {"random": 2, "pairs": 3}
KILL_DEADLINE_SECONDS = 600


def wait_for_finetuning_then_kill(process, results, log_path) -> int:
    """Kill the run's process group once Snakemake has finished one job of finetune_subsets
    while another is running; return how many it had finished."""
    logs = results / "logs" / "finetune_subsets"
    chunks = results / "subset_values" / "finetune"
    deadline = time.monotonic() + KILL_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"snakemake ended (rc {process.returncode}) before it could be killed")
        finished = log_path.read_text().count("(Rule: finetune_subsets)")
        running = {
            (design, c) for design, n in CHUNKS.items() for c in range(n)
            if (logs / f"{design}_{c}.log").exists()
            and not (chunks / design / f"chunk_{c}.parquet").exists()
        }
        if finished and running:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
            return finished
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail("finetune_subsets never had one job finished while another ran")


def process_group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def run_killed_and_resumed(workdir: Path) -> dict:
    """The smoke workflow killed during finetune_subsets, then resumed to completion, in a
    copy of the repository at ``workdir``/repo (started in the background when the session
    starts, see conftest.py)."""
    workdir = copy_repository(workdir / "repo")
    results = workdir / "results" / "smoke"
    log_path = workdir / "killed.log"
    process = start_snakemake_in_repository(workdir, log_path=log_path)
    finished_at_kill = wait_for_finetuning_then_kill(process, results, log_path)
    for _ in range(100):  # the jobs die with Snakemake: they are in its process group
        if process_group_is_gone(process.pid):
            break
        time.sleep(0.1)
    assert process_group_is_gone(process.pid)
    assert not (results / "subset_values" / "finetune" / "random.parquet").exists()
    # the random design may not be drawn yet: the pair design's fine-tunings need only
    # the meta-initialization, and the kill follows the first of them to finish
    sampled = "(Rule: sample_subsets)" in log_path.read_text()

    snakemake_in_repository(workdir, "--unlock")
    plan = snakemake_in_repository(workdir, "-n")
    jobs = scheduled_jobs(plan.stdout + plan.stderr)
    (workdir / "resume_plan.log").write_text(plan.stdout + plan.stderr)
    snakemake_in_repository(workdir)
    return {"workdir": workdir, "finished_at_kill": finished_at_kill, "resume_plan": jobs,
            "sampled_at_kill": sampled}


def start_resume_run(tmp_path_factory) -> None:
    start_in_background("resume", tmp_path_factory, run_killed_and_resumed)


BACKGROUND_RUNS = {"resumed_run": start_resume_run}  # started early, see conftest.py


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    start_resume_run(tmp_path_factory)
    return background_result("resume")


def test_resuming_redoes_only_what_the_crash_left_undone(resumed_run):
    jobs = resumed_run["resume_plan"]
    expected = sum(CHUNKS.values()) - resumed_run["finished_at_kill"]
    assert jobs.get("finetune_subsets") == expected, jobs
    assert not {"prepare_dataset", "train_meta_init"} & set(jobs), jobs
    # drawn before the kill (Snakemake reported the job finished): not again
    assert ("sample_subsets" in jobs) != resumed_run["sampled_at_kill"], jobs
    assert {"gather_subset_values", "higher_order_affinity", "cluster_tasks"} <= set(jobs), jobs


def test_resumed_run_leaves_no_partial_file_and_every_table_reads(resumed_run):
    results = resumed_run["workdir"] / "results"
    leftovers = [p for p in results.rglob("*") if ".partial-" in p.name]
    assert leftovers == []
    tables = parquet_files(results)
    assert len(tables) > 30
    for name, path in tables.items():
        assert not name.split("/")[-1].startswith("."), name
        pd.read_parquet(path)


def test_resumed_run_ends_with_the_outputs_of_an_uninterrupted_run(resumed_run, shared_run):
    reference = shared_run / "results" / "smoke"
    resumed = resumed_run["workdir"] / "results" / "smoke"
    for name in (
        "subset_values/finetune/random.parquet", "subset_values/finetune/pairs.parquet",
        "affinity/higher_order.parquet", "affinity/pairwise.parquet",
        "surrogates/coefficients.parquet",
        "evaluation/summary.parquet", "evaluation/per_task.parquet",
    ):
        pd.testing.assert_frame_equal(
            pd.read_parquet(resumed / name), pd.read_parquet(reference / name)
        )


def test_two_runs_in_two_directories_write_byte_identical_parquet_files(
    resumed_run, shared_run
):
    reference = parquet_files(shared_run / "results")
    resumed = parquet_files(resumed_run["workdir"] / "results")
    assert sorted(resumed) == sorted(reference)
    differing = [
        name for name in reference
        if reference[name].read_bytes() != resumed[name].read_bytes()
    ]
    assert differing == []
