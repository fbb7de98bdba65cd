"""The smoke workflow on a real SLURM cluster, with profiles/slurm.

Runs when SLURM is reachable (``scontrol ping`` answers), or when TASKGROUP_SLURM_TEST=1 or
CI=true ask for it: then tests/slurm/start_slurm.sh installs and starts a one-node cluster on
this machine (root, Debian; fake GPUs, accounting) and tests/slurm/stop_slurm.sh stops it at
the end of the session. Otherwise the test is skipped. The run starts in the background when
the session starts (see conftest.py) and the test, collected last, checks it. One command:

    TASKGROUP_SLURM_TEST=1 .venv/bin/python -m pytest -m slurm -s

On another cluster, name its partition and account with TASKGROUP_SLURM_PARTITION and
TASKGROUP_SLURM_ACCOUNT (the local cluster's are ``debug`` and ``taskgroup``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import (
    ROOT,
    background_result,
    make_workdir,
    start_in_background,
    started_in_background,
)

pytestmark = pytest.mark.slurm

SLURM_SCRIPTS = ROOT / "tests" / "slurm"
PROFILE = ROOT / "profiles" / "slurm"
PARTITION = os.environ.get("TASKGROUP_SLURM_PARTITION", "debug")
ACCOUNT = os.environ.get("TASKGROUP_SLURM_ACCOUNT", "taskgroup")
# The plugin checks job states this many seconds after a submission and after each check
# that saw a job finish, and 10 s later each time after a check that saw none (its default,
# 40 s, suits real queues). A little above the typical job here: a job step is two Snakemake
# starts plus the script, 8-14 s on 2 cores; with 10 s most jobs were seen only after 30 s.
STATUS_CHECK_SECONDS = int(os.environ.get("TASKGROUP_SLURM_STATUS_SECONDS", "15"))
# Installing the packages on a fresh machine takes ~20 s; stopping ~10 s.
SCRIPT_TIMEOUT_SECONDS = 900
# The smoke config on SLURM: about 13 submissions, each waiting for the queue and its status
# checks; a generous bound, since a loaded CI machine runs the jobs slowly.
RUN_TIMEOUT_SECONDS = 1800
TRAINING_RULES = (
    "train_meta_init", "finetune_subsets", "lookahead_affinity", "train_group_models",
    "forward_selection",
)
OUTPUTS = ("summary", "per_task")
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.?$", re.M)


def requested() -> bool:
    return os.environ.get("TASKGROUP_SLURM_TEST") == "1" or os.environ.get("CI") == "true"


def slurm_reachable() -> bool:
    if not (shutil.which("scontrol") and shutil.which("sbatch")):
        return False
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return ping.returncode == 0 and "UP" in ping.stdout


def run_script(name: str, *args: str) -> None:
    result = subprocess.run(
        ["bash", str(SLURM_SCRIPTS / name), *args],
        capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_SECONDS,
    )
    print(result.stderr.strip())
    assert result.returncode == 0, f"{name} failed ({result.returncode}):\n{result.stderr[-4000:]}"


def cluster_plan() -> tuple[str, str]:
    """How this session gets a cluster: ("use", "") when one answers, ("start", "") when the
    test is asked for and none answers (start_slurm.sh starts one), else ("skip" or "fail",
    why)."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        message = "snakemake-executor-plugin-slurm is not installed (pip install -e '.[test]')"
        return ("fail" if requested() else "skip"), message
    if slurm_reachable():
        return "use", ""
    if not requested():
        return "skip", ("SLURM is not reachable; TASKGROUP_SLURM_TEST=1 starts a local "
                        "one-node cluster (root, Debian) with tests/slurm/start_slurm.sh")
    return "start", ""


_STARTED_CLUSTER: list[bool] = []


def start_slurm_run(tmp_path_factory) -> None:
    """Start the smoke workflow on SLURM in the background (starting a cluster first if the
    plan says so). Called when the session starts: the run mostly waits for the queue and its
    status checks, while the other tests run."""
    if started_in_background("slurm"):
        return
    action, _ = cluster_plan()
    if action in ("use", "start"):
        start_in_background("slurm", tmp_path_factory, run_on_slurm, action == "start")


def run_on_slurm(workdir: Path, start_cluster: bool) -> dict:
    make_workdir(workdir)
    if start_cluster:
        _STARTED_CLUSTER.append(True)
        run_script("start_slurm.sh")
        assert slurm_reachable(), "start_slurm.sh finished but `scontrol ping` does not answer"
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--workflow-profile", str(PROFILE),
        "--default-resources", *profile_default_resources(),
        "--slurm-init-seconds-before-status-checks", str(STATUS_CHECK_SECONDS),
        "--slurm-keep-successful-logs",
    ]
    start = time.monotonic()
    returncode, output = run_with_hard_timeout(command, workdir, RUN_TIMEOUT_SECONDS)
    seconds = time.monotonic() - start
    (workdir / "slurm_run.log").write_text(output)
    return {"workdir": workdir, "returncode": returncode, "output": output, "seconds": seconds}


def stop_started_cluster() -> None:
    """Stop the cluster this session started (at the end of the session)."""
    if _STARTED_CLUSTER:
        _STARTED_CLUSTER.clear()
        run_script("stop_slurm.sh")


def profile_default_resources() -> list[str]:
    """The profile's default-resources as --default-resources arguments, with the placeholder
    partition and account replaced by the test cluster's (a command-line --default-resources
    replaces the profile's whole section, so every entry is repeated)."""
    resources = yaml.safe_load((PROFILE / "config.yaml").read_text())["default-resources"]
    resources.update(slurm_partition=PARTITION, slurm_account=ACCOUNT)
    return [f"{name}={value!r}" if isinstance(value, str) else f"{name}={value}"
            for name, value in resources.items()]


def run_with_hard_timeout(command: list[str], cwd: Path, timeout: float):
    """Run ``command``; past ``timeout`` kill its whole process group (snakemake ignores a
    plain SIGTERM while jobs are running) and fail."""
    env = {k: v for k, v in os.environ.items() if k != "SNAKEMAKE_PROFILE"}
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        jobs = [m.group(1) for m in SUBMITTED.finditer(output)]
        if jobs:
            subprocess.run(["scancel", *jobs], capture_output=True, timeout=30)
        pytest.fail(f"snakemake on SLURM did not finish in {timeout} s:\n{output[-4000:]}")
    return process.returncode, output


def submissions(output: str) -> dict[str, str]:
    """SLURM job id -> what it ran: 'rule_<rule>' or 'group_<group>_<rules>' (the plugin's
    log directory name)."""
    found = {}
    for job_id, log in SUBMITTED.findall(output):
        parts = Path(log).parts
        found[job_id] = parts[parts.index("slurm_logs") + 1]
    return found


def accounting(job_ids) -> dict[str, dict]:
    """State and AllocTRES (as a dict) of each SLURM job, from sacct."""
    result = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,State,AllocTRES"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, f"sacct failed: {result.stderr}"
    rows = {}
    for line in result.stdout.splitlines():
        job_id, state, tres = line.split("|")
        rows[job_id] = {
            "state": state, "alloc_tres": tres,
            "tres": dict(item.split("=", 1) for item in tres.split(",") if "=" in item),
        }
    return rows


BACKGROUND_RUNS = {"slurm_run": start_slurm_run}  # started early, see conftest.py


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    """The smoke workflow run on SLURM (skipped or failed as cluster_plan says)."""
    action, why = cluster_plan() if not started_in_background("slurm") else ("use", "")
    if action in ("skip", "fail"):
        getattr(pytest, action)(why)
    start_slurm_run(tmp_path_factory)
    return background_result("slurm")


def test_smoke_workflow_on_slurm_matches_a_local_run(slurm_run, shared_run, record_property):
    check_slurm_run(slurm_run, record_property)
    # The reference: the session's local run of the same config (shared with other modules).
    slurm_dir = slurm_run["workdir"]
    local_results = shared_run / "results/smoke/evaluation"
    for name in OUTPUTS:
        on_slurm = pd.read_parquet(slurm_dir / "results/smoke/evaluation" / f"{name}.parquet")
        locally = pd.read_parquet(local_results / f"{name}.parquet")
        pd.testing.assert_frame_equal(on_slurm, locally, check_exact=True)


def check_slurm_run(run: dict, record_property) -> None:
    """Check that the workflow run on SLURM completed, and where its jobs ran."""
    slurm_dir, returncode, output, seconds = (
        run["workdir"], run["returncode"], run["output"], run["seconds"]
    )
    assert returncode == 0, f"snakemake on SLURM failed ({returncode}):\n{output[-6000:]}"
    assert re.search(r"(\d+) of \1 steps \(100%\) done", output), output[-2000:]

    jobs = submissions(output)
    tres = accounting(jobs) if jobs else {}
    report = {
        "slurm_submissions": len(jobs),
        "seconds": round(seconds, 1),
        "jobs": {job_id: {"ran": ran, **{k: tres.get(job_id, {}).get(k) for k in
                                         ("state", "alloc_tres")}}
                 for job_id, ran in sorted(jobs.items(), key=lambda item: int(item[0]))},
    }
    print(f"\nSLURM run: {len(jobs)} sbatch submissions, {seconds:.0f} s\n"
          + json.dumps(report["jobs"], indent=1))
    record_property("slurm_submissions", len(jobs))
    record_property("slurm_seconds", round(seconds, 1))
    (slurm_dir / "slurm_report.json").write_text(json.dumps(report, indent=1))

    # Every submission completed; every training rule ran on SLURM with exactly one GPU.
    assert set(tres) == set(jobs), f"sacct knows {sorted(tres)}, submitted {sorted(jobs)}"
    assert all(row["state"] == "COMPLETED" for row in tres.values()), report
    for rule in TRAINING_RULES:
        ran = [job_id for job_id, what in jobs.items() if rule in what]
        assert ran, f"no SLURM job ran {rule}: {jobs}"
        for job_id in ran:
            assert tres[job_id]["tres"].get("gres/gpu") == "1", (rule, tres[job_id])
    # The group models are trained in evaluation.training_jobs (2) batch jobs, each holding
    # several groups.
    final = slurm_dir / "results/smoke/final/plain"
    groups = sum(path.is_dir() for path in final.iterdir())
    final_model_jobs = [j for j, what in jobs.items() if "train_group_models" in what]
    assert len(final_model_jobs) == 2 < groups, jobs
