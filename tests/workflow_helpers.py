"""Run the real workflow with Snakemake on a config in a scratch directory."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = ROOT / "tests" / "smoke" / "config.yaml"
TIMEOUT_SECONDS = 900


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
