"""The whole workflow on planted configs of growing k: job counts, CPU and wall time and
peak memory per rule, the SDP's solve time next to spectral's, and the total wall time.

Usage (from the repository root, on a quiet machine; each k runs in its own temporary
directory, removed afterwards unless --keep):

    python benchmarks/scale.py --tasks 30 100 --cores 2

Config per k: the shipped config/config.yaml (gradient estimator, every default affinity
source, clustering method and baseline) with k planted tasks in groups of 5 (k <= 30) or
10, n_clusters = the number of groups, m = max(600, 10 k) random subsets (m = 3,000 at
k = 300) and the shipped subset size alpha, raised as far as needed for a pair of tasks to
share 2 or more subsets on average (m alpha (alpha - 1) / (k (k - 1)) >= 2: alpha = 5 up
to k = 100, 9 at k = 300, 11 at k = 500).

Per-job numbers come from a ``sitecustomize`` module put on the jobs' PYTHONPATH: at exit
every Python process of the run appends its script name, peak RSS (getrusage), CPU time
(user + system) and wall time to a JSON-lines file. Snakemake runs each job's script in a
process of its own, named ``tmp<random>.<rule>.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from taskgroup.data.designs import expected_pair_count

REPOSITORY = Path(__file__).resolve().parent.parent
# Subsets a pair of tasks shares on average in the benchmark's random design.
PAIR_COVERAGE = 2.0

PEAKS_HOOK = '''
import atexit, json, os, resource, sys, time
_started = time.time()
def _record():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "?"
    with open(os.environ["TASKGROUP_PEAKS"], "a") as handle:
        handle.write(json.dumps({"script": name, "rss_mb": usage.ru_maxrss / 1024,
                                 "cpu_s": usage.ru_utime + usage.ru_stime,
                                 "wall_s": time.time() - _started}) + "\\n")
if os.environ.get("TASKGROUP_PEAKS"):
    atexit.register(_record)
'''


def planted_config(n_tasks: int) -> dict:
    """The shipped config with ``n_tasks`` planted tasks (module docstring)."""
    config = yaml.safe_load((REPOSITORY / "config" / "config.yaml").read_text())
    per_group = 5 if n_tasks <= 30 else 10
    if n_tasks % per_group:
        raise ValueError(f"k = {n_tasks} is not a multiple of the group size {per_group}")
    groups = n_tasks // per_group
    config["dataset"]["name"] = f"scale{n_tasks}"
    config["dataset"]["planted"].update(n_groups=groups, tasks_per_group=per_group)
    count = max(600, 10 * n_tasks)
    config["subsets"]["count"] = count
    while expected_pair_count(n_tasks, config["subsets"]["size"], count) < PAIR_COVERAGE:
        config["subsets"]["size"] += 1
    config["estimator"] = "gradient"
    clustering = config["clustering"]
    clustering["n_clusters"] = groups
    clustering["max_clusters"] = max(clustering["max_clusters"], groups)
    return config


def rule_of(script: str) -> str | None:
    """The rule of a job script ``tmp<random>.<rule>.py``; None for other processes."""
    match = re.fullmatch(r"tmp[^.]+\.(\w+)\.py", script)
    return match.group(1) if match else None


def sdp_and_spectral_seconds(logs: Path) -> dict[str, float]:
    """Solve seconds per clustering method, summed over the affinity sources, from the
    cluster_tasks logs ("<method> on <source> affinity ...; <s> s")."""
    pattern = re.compile(r"(\w+) on \w+ affinity .*?; ([\d.]+) s$", re.MULTILINE)
    seconds: dict[str, float] = {}
    for log in sorted((logs / "cluster_tasks").glob("*.log")):
        for method, value in pattern.findall(log.read_text()):
            seconds[method] = seconds.get(method, 0.0) + float(value)
    return seconds


def run_one(n_tasks: int, cores: int, keep: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix=f"taskgroup-scale{n_tasks}-"))
    (workdir / "config").mkdir()
    config = planted_config(n_tasks)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    hook = workdir / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PEAKS_HOOK)
    peaks = workdir / "peaks.jsonl"
    env = dict(os.environ, TASKGROUP_PEAKS=str(peaks),
               PYTHONPATH=os.pathsep.join([str(hook), str(REPOSITORY)]))
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPOSITORY / "Snakefile"),
        "--directory", str(workdir), "--cores", str(cores),
    ]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        print(result.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"k = {n_tasks}: the workflow failed; its directory is {workdir}")
    per_rule: dict[str, dict[str, float]] = {}
    for line in peaks.read_text().splitlines():
        record = json.loads(line)
        rule = rule_of(record["script"])
        if rule is None:
            continue
        row = per_rule.setdefault(rule, {"jobs": 0, "cpu_s": 0.0, "wall_s": 0.0, "rss_mb": 0.0})
        row["jobs"] += 1
        row["cpu_s"] += record["cpu_s"]
        row["wall_s"] += record["wall_s"]
        row["rss_mb"] = max(row["rss_mb"], record["rss_mb"])
    name = config["dataset"]["name"]
    print(f"\nk = {n_tasks} ({config['dataset']['planted']['n_groups']} groups), "
          f"m = {config['subsets']['count']}, --cores {cores}: total wall {wall:.0f} s, "
          f"{sum(row['jobs'] for row in per_rule.values())} jobs, "
          f"{sum(row['cpu_s'] for row in per_rule.values()):.0f} CPU s in jobs")
    print(f"{'rule':<24}{'jobs':>6}{'CPU s':>10}{'wall s':>10}{'peak MB':>10}")
    for rule, row in sorted(per_rule.items(), key=lambda item: -item[1]["cpu_s"]):
        print(f"{rule:<24}{row['jobs']:>6}{row['cpu_s']:>10.1f}{row['wall_s']:>10.1f}"
              f"{row['rss_mb']:>10.0f}")
    seconds = sdp_and_spectral_seconds(workdir / "results" / name / "logs")
    print("clustering solve s (summed over sources): "
          + ", ".join(f"{method} {value:.2f}" for method, value in sorted(seconds.items())))
    if keep:
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[30, 100, 300, 500])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    arguments = parser.parse_args()
    for n_tasks in arguments.tasks:
        run_one(n_tasks, arguments.cores, arguments.keep)


if __name__ == "__main__":
    main()
