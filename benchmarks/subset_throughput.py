"""Benchmark: the gradient estimator's throughput (subsets valued per CPU second) at large k.

Usage:
  python benchmarks/subset_throughput.py [--config config/config.yaml] [--groups 60]
      [--hidden 64 64] [--dim 512] [--structure kronecker] [--epochs 5] [--subsets 500]
      [--threads 1] [--jobs 1] [--layout projected|dense] [--baseline /path/to/other/checkout]

The data: the config's planted dataset with ``--groups`` groups (k = groups x
tasks_per_group tasks; the default 60 x 5 = 300), a meta-initialization with the trunk
``--hidden`` trained for ``--epochs`` epochs, and every training and validation example's
gradient projected with ``--structure`` to projection.dim ``--dim`` (the task heads' columns
are each task's own, see taskgroup.estimate.projection). ``--layout dense`` replaces the
projected gradients by Gaussian ones with ``--dim`` columns that every task uses (no head
columns: the worst case, one (d, d) system per subset). ``--subsets`` random subsets of
the config's subsets.size are valued by ``estimate_values`` with the config's
gradient_estimate settings, as one chunk of the estimate_subsets stage (per-task statistics
included), in a fresh process with ``--threads`` threads (the stage's jobs have one; on 2
cores two chunks run at once), after a warm-up on 2 subsets. ``--jobs N`` runs N such
processes at once, each on its own ``--subsets`` random subsets (the design's seed plus
the job's number), as the workflow runs N chunk jobs on N cores.

Printed per run: subsets per CPU second (user + system time of the process) and per wall
second, the process's peak resident memory and its peak above the footprint after loading
the data and the warm-up (0: the estimate stayed below that), and the machine's load
average; with ``--jobs`` above 1, a row per job and the subsets of all jobs per wall
second, from the first job's start of its estimate to the last one's end (a job still
loading its data while another estimates counts against it). ``--baseline DIR`` runs the
same estimate a second time with the
library of another checkout (e.g. an older commit, ``git archive <commit> taskgroup | tar
-x -C DIR``) on the same data and subsets, and prints the ratio of the two and the largest
differences of their loss and metric values. Nothing is asserted about the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import (
    ROOT,
    checkouts,
    comparison_parser,
    cpu_seconds,
    library_environment,
    peak_rss_mb,
    validated_config,
)

# Examples projected at a time (the stage derives it from its memory; 4096 is its cap).
PROJECTION_BATCH = 4096
# The memory a batch of subset fits may take (the stage's default when its job has 1 GB).
BATCH_MEMORY_MB = 512.0


def projected_splits(config: dict, args) -> tuple[dict, list[str], bool]:
    """The projected train and val splits (or their dense stand-ins), the task names, and
    whether the projection keeps every parameter (False for the stand-ins)."""
    from taskgroup.data.datasets.planted import generate_planted, planted_spec
    from taskgroup.data.examples import build_task_data
    from taskgroup.estimate.linearized import ProjectedSplit
    from taskgroup.estimate.projection import make_projector
    from taskgroup.estimate.settings import ProjectionSettings
    from taskgroup.estimate.valuers import project_data
    from taskgroup.models.training import TrainSettings, train_new_model

    section = dict(config["dataset"]["planted"], n_groups=args.groups)
    examples, tasks = generate_planted(planted_spec(section))
    data = build_task_data(examples, tasks)
    if args.layout == "dense":
        generator = torch.Generator().manual_seed(0)
        scale = torch.arange(1, args.dim + 1, dtype=torch.float32) ** -0.5
        splits = {}
        for split in ("train", "val"):
            tensors = data.splits[split]
            n = len(tensors.labels)
            splits[split] = ProjectedSplit(
                torch.randn(n, args.dim, generator=generator) * scale,
                torch.randn(n, generator=generator), tensors.labels, tensors.task_index,
                tensors.regression,
            )
        return splits, data.task_names, False
    meta = config["meta_init"]
    settings = TrainSettings(args.epochs, meta["lr"], meta["batch_size"], meta["weight_decay"])
    model = train_new_model(data, torch.arange(data.n_tasks), args.hidden, settings,
                            meta["seed"], torch.device("cpu"))
    projection = config["projection"]
    nonzeros = projection["nonzeros"] if args.structure == "sparse" else None
    projector = make_projector(model, ProjectionSettings(
        args.structure, projection["kind"], projection["seed"], args.dim, nonzeros
    ))
    return project_data(model, projector, data, PROJECTION_BATCH), data.task_names, projector.exact


def child(path: Path, threads: int, job: int) -> None:
    """Value job ``job``'s subsets saved in ``path`` with the library on sys.path; write the
    values and the measurements next to it."""
    from taskgroup.estimate.linearized import estimate_values
    from taskgroup.estimate.settings import GradientEstimateSettings

    torch.set_num_threads(threads)
    saved = torch.load(path / "inputs.pt", weights_only=False)
    subsets, names = saved["subsets"][job], saved["names"]
    settings = GradientEstimateSettings.from_mapping(saved["settings"])
    if settings.l2_is_auto:
        # l2 changes the values, not the work: the middle candidate
        candidates = sorted(saved["settings"]["l2_candidates"])
        settings = settings.with_l2(candidates[len(candidates) // 2])
    train, val = saved["splits"]["train"], saved["splits"]["val"]
    estimate_values(train, val, subsets[subsets["subset_id"] < 2], names, settings,
                    memory_mb=BATCH_MEMORY_MB)
    baseline = peak_rss_mb()
    started_cpu, started, began = cpu_seconds(), time.perf_counter(), time.time()
    values = estimate_values(train, val, subsets, names, settings, memory_mb=BATCH_MEMORY_MB)
    measured = {
        "cpu_s": cpu_seconds() - started_cpu, "wall_s": time.perf_counter() - started,
        "began": began, "ended": time.time(),
        "peak_mb": peak_rss_mb(), "above_mb": peak_rss_mb() - baseline,
        "load": os.getloadavg()[0],
    }
    values.to_parquet(path / f"values_{job}.parquet")
    (path / f"measured_{job}.json").write_text(json.dumps(measured))


def run(library: Path, path: Path, threads: int, jobs: int) -> list[tuple[dict, pd.DataFrame]]:
    """The ``jobs`` children at once, each in a fresh process importing taskgroup from
    ``library``; each one's measurements and values."""
    environment = library_environment(library)
    processes = [
        subprocess.Popen([sys.executable, __file__, "--child", str(path), "--threads",
                          str(threads), "--job", str(job)], env=environment)
        for job in range(jobs)
    ]
    if any(process.wait() != 0 for process in processes):
        raise SystemExit(f"a job valuing subsets with the library of {library} failed")
    return [(json.loads((path / f"measured_{job}.json").read_text()),
             pd.read_parquet(path / f"values_{job}.parquet")) for job in range(jobs)]


def main():
    parser = comparison_parser(__doc__, [64, 64])
    parser.add_argument("--groups", type=int, default=60)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--structure", default="kronecker")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--subsets", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--layout", choices=("projected", "dense"), default="projected")
    parser.add_argument("--job", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child), args.threads, args.job)
        return
    sys.path.insert(0, str(ROOT))
    from taskgroup.data.designs import random_design
    from taskgroup.estimate.settings import GradientEstimateSettings

    config = validated_config(args.config)
    torch.set_num_threads(args.threads)
    splits, names, exact = projected_splits(config, args)
    # step_scale "auto" resolved here by this checkout's rule, as the workflow resolves it
    # for its projection, so that a baseline library without the setting reads the same
    estimate = dict(config["gradient_estimate"])
    estimate["step_scale"] = GradientEstimateSettings.from_mapping(estimate).for_projection(
        exact).step_scale
    subsets = [random_design(names, config["subsets"]["size"], args.subsets,
                             config["subsets"]["seed"] + job) for job in range(args.jobs)]
    libraries = checkouts(args.baseline)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        torch.save({"splits": splits, "subsets": subsets, "names": names,
                    "settings": estimate}, path / "inputs.pt")
        for label, library in libraries:
            results[label] = run(library, path, args.threads, args.jobs)
    z = splits["train"].z
    print(f"k = {len(names)} tasks, trunk {args.hidden}, {args.layout} gradients "
          f"({args.structure} to projection.dim {args.dim}): {z.shape[1]} columns, "
          f"{len(splits['train'].labels)} training and {len(splits['val'].labels)} validation "
          f"examples; m = {args.subsets} subsets of size {config['subsets']['size']}; "
          f"{args.threads} threads, {args.jobs} job(s) at once")
    rows = []
    for label, outcomes in results.items():
        for job, (measured, _) in enumerate(outcomes):
            rows.append({
                "library": label, "job": job,
                "subsets_per_cpu_s": args.subsets / measured["cpu_s"],
                "subsets_per_wall_s": args.subsets / measured["wall_s"],
                "cpu_s": measured["cpu_s"], "peak_mb": measured["peak_mb"],
                "above_load_mb": measured["above_mb"],
                "load_1min": measured["load"],
            })
    print(pd.DataFrame(rows).round(2).to_string(index=False))
    if args.jobs > 1:
        for label, outcomes in results.items():
            span = (max(measured["ended"] for measured, _ in outcomes)
                    - min(measured["began"] for measured, _ in outcomes))
            print(f"{label}: {args.jobs} jobs at once valued {args.jobs * args.subsets} "
                  f"subsets in {span:.2f} s wall: {args.jobs * args.subsets / span:.0f} "
                  "subsets per wall second")
    if args.baseline:
        (new, ours), (old, theirs) = (outcomes[0] for outcomes in results.values())
        print(f"CPU time ratio baseline / this checkout (job 0): "
              f"{old['cpu_s'] / new['cpu_s']:.1f}")
        keys = ["subset_id", "task"]
        both = ours.merge(theirs, on=keys, suffixes=("", "_baseline"))
        assert len(both) == len(ours) == len(theirs)
        for column in ("loss", "metric"):
            gap = np.abs(both[column] - both[f"{column}_baseline"])
            relative = gap / np.abs(both[f"{column}_baseline"]).clip(lower=1e-12)
            print(f"{column}: largest difference {gap.max():.2e} (relative {relative.max():.2e})")


if __name__ == "__main__":
    main()
