"""What the benchmarks share: the repository's root, a validated config, the process's CPU
time and peak memory, and the libraries a benchmark compares (this checkout's and a
baseline's, each imported by a child process of its own) with the options and the child
process that such a comparison takes."""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]


def validated_config(path: str | Path) -> dict:
    """The config at ``path``, validated against the workflow's schema, which fills in the
    defaults as it does for the workflow."""
    config = yaml.safe_load(Path(path).read_text())
    validate(config, str(ROOT / "config" / "config.schema.yaml"))
    return config


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def checkouts(baseline: str | None) -> list[tuple[str, Path]]:
    """(label, folder holding the taskgroup library) of this checkout, then of ``baseline``
    when given (e.g. ``git archive <commit> taskgroup | tar -x -C DIR``)."""
    found = [("this checkout", ROOT)]
    if baseline:
        found.append((f"baseline {baseline}", Path(baseline)))
    return found


def library_environment(library: Path) -> dict[str, str]:
    """The environment of a child process that imports taskgroup from ``library``."""
    return dict(os.environ, PYTHONPATH=str(library))


def comparison_parser(doc: str, hidden: list[int]) -> argparse.ArgumentParser:
    """The options of a benchmark that runs its work in a child process per library:
    --config, --hidden (default ``hidden``), --threads, --baseline, and the hidden --child
    (the folder of the child's inputs); the description is ``doc``'s first line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--hidden", type=int, nargs="+", default=hidden)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--baseline", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser


def run_child(script: str, library: Path, path: Path, *options: str) -> None:
    """Run ``script`` as a child (``--child path`` and ``options``) in a fresh process that
    imports taskgroup from ``library``; SystemExit naming the library when it fails."""
    process = subprocess.run([sys.executable, script, "--child", str(path), *options],
                             env=library_environment(library))
    if process.returncode != 0:
        raise SystemExit(f"{Path(script).name} with the library of {library} failed")
