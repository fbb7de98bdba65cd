"""Benchmark: the cost of collecting and projecting the gradients, in training epochs.

Usage:
  python benchmarks/projection_cost.py [--config config/config.yaml] [--hidden 256 256]
      [--n-train 100 1000] [--settings eigen:1024@adam eigen:1024@none kronecker:1024@none]
      [--repeats 3]

For each ``--n-train`` (examples per task in the training and in the validation split of
the config's planted dataset; k from the config), a meta-initialization with the trunk
``--hidden`` is trained for 10 epochs, then the median over ``--repeats`` of the CPU time
(user + system of this process, 1 thread) of: one training epoch on all tasks from the
meta-initialization (the config's meta_init batch size and rate), and
:func:`taskgroup.estimate.valuers.project_data` for each projection setting
(``structure:dim[:nonzeros]@preconditioner``, as in benchmarks/estimation.py): the fit, if
any, and the projection of every training and validation example, at the projection stage's
largest batch (4096 examples). Printed: the CPU seconds and their ratio to the epoch. CPU
time, not wall time, as the machine is shared. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, validated_config  # noqa: E402
from estimation import (  # noqa: E402
    PROJECTION_BATCH,
    load_data,
    one_epoch_seconds,
    projection_settings,
    timed,
    training,
)

from taskgroup.estimate.projection import make_projector  # noqa: E402
from taskgroup.estimate.valuers import project_data  # noqa: E402
from taskgroup.models.training import train_new_model  # noqa: E402


def measure(config: dict, hidden: list[int], settings: list[str], repeats: int) -> list[dict]:
    data, _ = load_data(config)
    meta = train_new_model(data, torch.arange(data.n_tasks), hidden,
                           training(dict(config["meta_init"], epochs=10), True), 0,
                           torch.device("cpu"))
    times = {"epoch": []}
    for _ in range(repeats):
        times["epoch"].append(one_epoch_seconds(config, data, meta, time.process_time))
        for text in settings:
            projector = make_projector(meta, projection_settings(text, config))
            times.setdefault(text, []).append(
                timed(lambda p=projector: project_data(meta, p, data, PROJECTION_BATCH),
                      time.process_time)
            )
    median = {key: sorted(values)[len(values) // 2] for key, values in times.items()}
    n_train = data.splits["train"].features.shape[0]
    return [
        {"train_examples": n_train, "setting": text, "cpu_s": median[text],
         "epoch_cpu_s": median["epoch"], "epochs": median[text] / median["epoch"]}
        for text in settings
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--n-train", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--settings", nargs="+",
                        default=["eigen:1024@adam", "eigen:1024@none", "kronecker:1024@none"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = validated_config(args.config)
    torch.set_num_threads(1)
    rows = []
    for n_train in args.n_train:
        sized = copy.deepcopy(config)
        sized["dataset"]["planted"].update(n_train=n_train, n_val=n_train)
        rows += measure(sized, args.hidden, args.settings, args.repeats)
    planted = config["dataset"]["planted"]
    k = planted["n_groups"] * planted["tasks_per_group"]
    print(f"trunk {args.hidden}, k = {k} tasks, 1 thread, CPU seconds (median of "
          f"{args.repeats}); the projection covers the training and the validation examples, "
          "the epoch the training examples")
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
