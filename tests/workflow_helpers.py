"""Run the real workflow with Snakemake on a config in a scratch directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = ROOT / "tests" / "smoke" / "config.yaml"
# Generous: a loaded CI machine runs the background runs side by side with the tests.
TIMEOUT_SECONDS = 1800


def make_workdir(tmp_path: Path, config: dict | None = None) -> Path:
    """A working directory holding config/config.yaml (the smoke config unless given)."""
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    if config is None:
        shutil.copy(SMOKE_CONFIG, tmp_path / "config" / "config.yaml")
    else:
        (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp_path


def smoke_config() -> dict:
    return yaml.safe_load(SMOKE_CONFIG.read_text())


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``snakemake`` with the repository's Snakefile in ``workdir``, under a hard timeout."""
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--cores", "2", *args,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, cwd=workdir
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    return result


def scheduled_jobs(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run ({} if nothing to do)."""
    counts: dict[str, int] = {}
    lines = dry_run_output.splitlines()
    if "Job stats:" not in lines:
        return counts
    for line in lines[lines.index("Job stats:") + 3 :]:
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not match or match.group(1) == "total":
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


# --- Runs in copies of the repository, shared runs, process control (rerun/resume tests) ---

COPY_IGNORE = shutil.ignore_patterns(
    "results", ".snakemake", ".venv", ".git", "__pycache__", ".pytest_cache", "*.egg-info",
    ".test", ".ruff_cache",
)


def copy_repository(destination: Path, source: Path = ROOT) -> Path:
    """A copy of the repository's working tree (tracked and untracked files; no results,
    Snakemake metadata, caches or virtualenv), with file times kept, holding the smoke config
    as its config/config.yaml (``source``: another such copy, whose config is kept)."""
    shutil.copytree(source, destination, ignore=COPY_IGNORE, symlinks=True)
    if source == ROOT:
        shutil.copy(SMOKE_CONFIG, destination / "config" / "config.yaml")
    return destination


def snakemake_in_repository(
    repository: Path, *args: str, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``snakemake`` the standard way (in the repository, with its own Snakefile) under a
    hard timeout. PYTHONPATH points at the repository, so the jobs import its ``taskgroup``
    and not the checkout the environment was installed from."""
    environment = {**os.environ, **(env or {}), "PYTHONPATH": str(repository)}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        capture_output=True, text=True, timeout=TIMEOUT_SECONDS, cwd=repository,
        env=environment,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    return result


def run_smoke_workflow(workdir: Path) -> Path:
    """Copy the repository to ``workdir``/repo and run the smoke workflow to completion in
    it; the copy."""
    repository = copy_repository(workdir / "repo")
    snakemake_in_repository(repository)
    return repository


def shared_smoke_repository(tmp_path_factory) -> Path:
    """A repository copy with the smoke workflow run to completion in it: run once per test
    session (started when the session starts if a selected test uses the ``shared_run``
    fixture, see conftest.py) and shared by the modules that need a completed run (do not
    change its files' contents)."""
    start_shared_smoke_run(tmp_path_factory)
    return background_result("smoke")


def start_shared_smoke_run(tmp_path_factory) -> None:
    start_in_background("smoke", tmp_path_factory, run_smoke_workflow)


# --- Long runs started in the background when the session starts ---
# Their work is in subprocesses (Snakemake and its jobs), so threads run them side by side
# with the tests; a test that needs one waits for its result. Three at a time: with the
# tests in the foreground they keep 2 cores busy; more would only stretch each run's time
# towards its timeout.

_BACKGROUND: dict[str, Future] = {}
_EXECUTOR = ThreadPoolExecutor(max_workers=3, thread_name_prefix="background-run")
_LOCK = threading.Lock()


def start_in_background(name: str, tmp_path_factory, function, *args) -> None:
    """Start ``function(workdir, *args)`` in a thread under ``name``, once per session
    (later calls do nothing); ``workdir`` is a new temporary folder named after the run."""
    with _LOCK:
        if name not in _BACKGROUND:
            workdir = tmp_path_factory.mktemp(name)
            _BACKGROUND[name] = _EXECUTOR.submit(function, workdir, *args)


def started_in_background(name: str) -> bool:
    return name in _BACKGROUND


def background_result(name: str):
    """The return value of the run started under ``name``; re-raises what it raised (a
    pytest skip or failure inside it skips or fails the test that asks)."""
    return _BACKGROUND[name].result()


def wait_for_background_runs() -> None:
    """Wait until every background run has ended (at the end of the session)."""
    for future in _BACKGROUND.values():
        future.exception()


def start_snakemake_in_repository(repository: Path, *args: str, log_path: Path):
    """Start ``snakemake`` like :func:`snakemake_in_repository`, in a new session (process
    group) so that it and its jobs can be killed together; output goes to ``log_path``."""
    environment = {**os.environ, "PYTHONPATH": str(repository)}
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "snakemake", "--cores", "2", *args],
            stdout=log, stderr=subprocess.STDOUT, cwd=repository, env=environment,
            start_new_session=True,
        )


def parquet_files(results: Path) -> dict[str, Path]:
    """Relative path -> path of every Parquet file under ``results`` (hidden files too)."""
    return {
        str(path.relative_to(results)): path
        for path in sorted(results.rglob("*"))
        if path.is_file() and ".parquet" in path.name
    }
