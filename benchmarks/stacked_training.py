"""Benchmark: many networks trained at once in one process (the final training and the real
fine-tuning of subsets), CPU seconds per step and per model-epoch.

Usage:
  python benchmarks/stacked_training.py [--config config/config.yaml] [--hidden 256 256]
      [--models 132] [--largest-group 10] [--epochs 20] [--threads 1] [--repeats 1]
      [--alone 6] [--baseline /path/to/other/checkout]

The data: the config's planted dataset. ``--models`` fresh networks with the trunk
``--hidden`` (seeds 0, 1, 2, ... as the final training's seeds of one group), each on a
random group of 1 to ``--largest-group`` tasks (seeded), are trained together by
``taskgroup.models.stacked.train_new_models`` for ``--epochs`` epochs each with the config's
final.lr, final.batch_size and final.weight_decay, scoring their validation loss after
every epoch as the final training does (no early stop, so every run takes the same steps),
in a fresh process with ``--threads`` threads, ``--repeats`` times (the median is
printed). ``--baseline DIR`` trains the same models a second time with the library of
another checkout (e.g. ``git archive <commit> taskgroup | tar -x -C DIR``) and prints the
ratio of the CPU times and the largest difference of the trained parameters (the two agree
to float rounding unless the training changed). The first ``--alone`` models are then
trained again one at a time (``train_new_model``, as the meta-initialization is). Printed
per library: steps, CPU seconds (user + system) in all, per step and per 1,000
model-epochs, wall seconds, the process's peak resident memory, and the CPU seconds per
1,000 model-epochs alone. Nothing is asserted about the numbers.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from common import (
    ROOT,
    checkouts,
    comparison_parser,
    cpu_seconds,
    peak_rss_mb,
    run_child,
    validated_config,
)


def child(path: Path, threads: int, repeats: int) -> None:
    """Train the models described in ``path`` with the library on sys.path; write their
    parameters and the measurements next to it."""
    from taskgroup.models import stacked
    from taskgroup.models.stacked import ModelSpec, train_new_models
    from taskgroup.models.training import TrainSettings, train_new_model

    torch.set_num_threads(threads)
    saved = torch.load(path / "inputs.pt", weights_only=False)
    specs = [ModelSpec(torch.tensor(tasks), seed) for tasks, seed in saved["groups"]]
    settings = TrainSettings(**saved["training"], select_best_epoch=True)
    # count the stack's steps: each is one batched forward and backward pass
    steps = 0
    forward = stacked._Stack.forward

    def counted(self, features, task_index, models=None):
        nonlocal steps
        if models is None:
            steps += 1
        return forward(self, features, task_index, models)

    stacked._Stack.forward = counted
    cpu, wall = [], []
    for _ in range(repeats):
        steps = 0
        started_cpu, started = cpu_seconds(), time.perf_counter()
        trained = train_new_models(saved["data"], specs, saved["hidden"], settings,
                                   torch.device("cpu"))
        cpu.append(cpu_seconds() - started_cpu)
        wall.append(time.perf_counter() - started)
    # the first models again, one at a time, as the meta-initialization is trained
    alone = []
    started_cpu = cpu_seconds()
    for spec in specs[: saved["alone"]]:
        alone.append(train_new_model(saved["data"], spec.task_indices, saved["hidden"],
                                     settings, spec.seed, torch.device("cpu")))
    alone_cpu = cpu_seconds() - started_cpu
    torch.save([model.state_dict() for model, _ in trained]
               + [model.state_dict() for model in alone], path / "models.pt")
    (path / "measured.json").write_text(json.dumps({
        "cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall), "steps": steps,
        "peak_mb": peak_rss_mb(), "alone_cpu_s": alone_cpu,
    }))


def run(library: Path, path: Path, threads: int, repeats: int) -> tuple[dict, list]:
    """The child in a fresh process importing taskgroup from ``library``."""
    run_child(__file__, library, path, "--threads", str(threads), "--repeats", str(repeats))
    return (json.loads((path / "measured.json").read_text()),
            torch.load(path / "models.pt", weights_only=False))


def main():
    parser = comparison_parser(__doc__, [256, 256])
    parser.add_argument("--models", type=int, default=132)
    parser.add_argument("--largest-group", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--alone", type=int, default=6,
                        help="also train this many of the models one at a time")
    args = parser.parse_args()
    if args.child:
        child(Path(args.child), args.threads, args.repeats)
        return
    sys.path.insert(0, str(ROOT))
    from taskgroup.data.datasets.planted import generate_planted, planted_spec
    from taskgroup.data.examples import build_task_data

    config = validated_config(args.config)
    data = build_task_data(*generate_planted(planted_spec(config["dataset"]["planted"])))
    generator = torch.Generator().manual_seed(0)
    largest = min(args.largest_group, data.n_tasks)
    groups = []
    for model in range(args.models):
        size = int(torch.randint(1, largest + 1, (1,), generator=generator))
        tasks = torch.randperm(data.n_tasks, generator=generator)[:size].sort().values
        groups.append((tasks.tolist(), model % 3))
    final = config["final"]
    training = {"epochs": args.epochs, "lr": final["lr"], "batch_size": final["batch_size"],
                "weight_decay": final["weight_decay"]}
    alone = min(args.alone, args.models)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        torch.save({"data": data, "groups": groups, "training": training,
                    "hidden": args.hidden, "alone": alone}, path / "inputs.pt")
        for label, library in checkouts(args.baseline):
            results[label] = run(library, path, args.threads, args.repeats)
    model_epochs = args.models * args.epochs
    print(f"{args.models} models, trunk {args.hidden}, groups of 1 to {largest} of k = "
          f"{data.n_tasks} tasks, {args.epochs} epochs each ({model_epochs} model-epochs), "
          f"batch {training['batch_size']}, {args.threads} thread(s), median of "
          f"{args.repeats}")
    rows = [{
        "library": label, "steps": measured["steps"], "cpu_s": measured["cpu_s"],
        "cpu_ms_per_step": 1000 * measured["cpu_s"] / measured["steps"],
        "cpu_s_per_1000_model_epochs": 1000 * measured["cpu_s"] / model_epochs,
        "wall_s": measured["wall_s"], "peak_mb": measured["peak_mb"],
        "alone_cpu_s_per_1000_model_epochs": (
            1000 * measured["alone_cpu_s"] / (alone * args.epochs) if alone else None
        ),
    } for label, (measured, _) in results.items()]
    print(pd.DataFrame(rows).round(3).to_string(index=False))
    if args.baseline:
        (new, ours), (old, theirs) = results.values()
        print(f"CPU time ratio baseline / this checkout: {old['cpu_s'] / new['cpu_s']:.2f}"
              + (f" stacked, {old['alone_cpu_s'] / new['alone_cpu_s']:.2f} alone" if alone
                 else ""))
        gap = max(float((mine[name] - other[name]).abs().max())
                  for mine, other in zip(ours, theirs) for name in mine)
        print(f"trained parameters: largest difference {gap:.2e}")


if __name__ == "__main__":
    main()
