"""Benchmark: real fine-tuning of a chunk of subsets and the valuing of the fine-tuned
models (the finetune_subsets job and the validation rules), CPU seconds and peak memory
against the memory the job declares.

Usage:
  python benchmarks/finetune_values.py [--config config/config.yaml] [--hidden 256 256]
      [--subsets 500] [--meta-epochs 2] [--lr 0.0003] [--threads 1]
      [--baseline /path/to/other/checkout]

The data: the config's planted dataset. A meta-initialization with the trunk ``--hidden``
is trained for ``--meta-epochs`` epochs with the config's meta_init settings; then, in a
fresh process with ``--threads`` threads, ``--subsets`` random subsets of the config's
subsets.size are fine-tuned together (``finetuned_models``, the config's finetune section
at rate ``--lr``) and each fine-tuned model's members are valued on their validation
examples (``values_of_models``), as one finetune_subsets job does with a chunk. Printed per
library: the CPU seconds (user + system) of each of the two, the process's peak resident
memory after each, and the mem_mb that this checkout's formula declares for such a job
(``taskgroup.resources.finetuning_mb``). ``--baseline DIR`` runs the same with the library
of another checkout (e.g. ``git archive <commit> taskgroup | tar -x -C DIR``) and prints
the ratios and the largest difference of the loss and metric values. Nothing is asserted
about the numbers.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
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


def child(path: Path, threads: int) -> None:
    """Fine-tune and value the subsets saved in ``path`` with the library on sys.path;
    write the values and the measurements next to it."""
    from taskgroup.estimate.finetune import FinetuneSettings, finetuned_models, values_of_models
    from taskgroup.models.network import MultiHeadNet

    torch.set_num_threads(threads)
    saved = torch.load(path / "inputs.pt", weights_only=False)
    data = saved["data"]
    meta = MultiHeadNet(data.n_features, data.n_tasks, saved["hidden"])
    meta.load_state_dict(saved["meta"])
    settings = FinetuneSettings.from_mapping(saved["finetune"])
    footprint = peak_rss_mb()
    started = cpu_seconds()
    models = finetuned_models(meta, data, saved["subsets"], settings)
    tuned = cpu_seconds()
    after_finetuning = peak_rss_mb()
    values = values_of_models(models, data)
    valued = cpu_seconds()
    values.to_parquet(path / "values.parquet")
    (path / "measured.json").write_text(json.dumps({
        "finetune_cpu_s": tuned - started, "values_cpu_s": valued - tuned,
        "footprint_mb": footprint, "peak_mb_finetuned": after_finetuning,
        "peak_mb_valued": peak_rss_mb(),
    }))


def run(library: Path, path: Path, threads: int) -> tuple[dict, pd.DataFrame]:
    """The child in a fresh process importing taskgroup from ``library``."""
    run_child(__file__, library, path, "--threads", str(threads))
    return (json.loads((path / "measured.json").read_text()),
            pd.read_parquet(path / "values.parquet"))


def main():
    parser = comparison_parser(__doc__, [256, 256])
    parser.add_argument("--subsets", type=int, default=500)
    parser.add_argument("--meta-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.0003)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child), args.threads)
        return
    sys.path.insert(0, str(ROOT))
    from taskgroup import resources
    from taskgroup.data.datasets.planted import generate_planted, planted_spec
    from taskgroup.data.designs import random_design
    from taskgroup.data.examples import build_task_data
    from taskgroup.models.training import TrainSettings, train_new_model

    config = validated_config(args.config)
    planted = config["dataset"]["planted"]
    data = build_task_data(*generate_planted(planted_spec(planted)))
    meta_section = config["meta_init"]
    meta = train_new_model(
        data, torch.arange(data.n_tasks), args.hidden,
        TrainSettings(args.meta_epochs, meta_section["lr"], meta_section["batch_size"],
                      meta_section["weight_decay"]),
        meta_section["seed"], torch.device("cpu"),
    )
    subsets = random_design(data.task_names, config["subsets"]["size"], args.subsets,
                            config["subsets"]["seed"])
    finetune = dict(config["finetune"], lr=args.lr)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        torch.save({"data": data, "hidden": args.hidden, "meta": meta.state_dict(),
                    "subsets": subsets, "finetune": finetune}, path / "inputs.pt")
        for label, library in checkouts(args.baseline):
            results[label] = run(library, path, args.threads)
    n_params = sum(p.numel() for p in meta.parameters())
    rows = resources.planted_examples(data.n_tasks, planted["n_train"], planted["n_val"],
                                      planted["n_test"])
    n_val = data.splits["val"].labels.shape[0]
    declared = resources.finetuning_mb(
        resources.examples_bytes(rows, planted["n_features"]), n_params, args.subsets, n_val,
        max(planted["n_features"], *args.hidden),
    )
    print(f"{args.subsets} subsets of {config['subsets']['size']} of k = {data.n_tasks} "
          f"tasks, trunk {args.hidden} (p = {n_params}), {finetune['epochs']} epochs at lr "
          f"{args.lr:g}, {n_val} validation examples, {args.threads} thread(s); the job's "
          f"declared mem_mb (this checkout's formula): {declared}")
    print(pd.DataFrame([{
        "library": label, "finetune_cpu_s": measured["finetune_cpu_s"],
        "values_cpu_s": measured["values_cpu_s"], "footprint_mb": measured["footprint_mb"],
        "peak_mb_finetuned": measured["peak_mb_finetuned"],
        "peak_mb_valued": measured["peak_mb_valued"],
    } for label, (measured, _) in results.items()]).round(2).to_string(index=False))
    if args.baseline:
        (new, ours), (old, theirs) = results.values()
        print(f"CPU time ratio baseline / this checkout: fine-tuning "
              f"{old['finetune_cpu_s'] / new['finetune_cpu_s']:.2f}, valuing "
              f"{old['values_cpu_s'] / new['values_cpu_s']:.2f}")
        both = ours.merge(theirs, on=["subset_id", "task"], suffixes=("", "_baseline"))
        assert len(both) == len(ours) == len(theirs)
        for column in ("loss", "metric"):
            gap = np.abs(both[column] - both[f"{column}_baseline"]).max()
            print(f"{column}: largest difference {gap:.2e}")


if __name__ == "__main__":
    main()
