"""Benchmark: the gradient estimator against real fine-tuning, in one run.

Usage: python benchmarks/estimation.py [--config config/config.yaml] [--subsets 200 600]

On the dataset of the config (at least 30 tasks), for each subset count m:
- wall time (after a warm-up call on 2 subsets) and peak memory (resident set of a fresh
  process, above its footprint after loading the data) of the gradient path (projection +
  every subset's estimate) and of real fine-tuning of the same subsets;
- gradient collection plus projection against one training epoch over the same examples;
- the estimate's error against real fine-tuning, next to a second real fine-tuning with
  another seed (the noise floor) and the trivial estimate that predicts no change.
Prints a table and the ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import resource
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from snakemake.utils import validate

from taskgroup.data.datasets.planted import generate_planted, planted_spec
from taskgroup.data.designs import random_design
from taskgroup.data.examples import build_task_data
from taskgroup.estimate.finetune import FinetuneSettings
from taskgroup.estimate.projection import make_projector, parameter_norm
from taskgroup.estimate.settings import GradientEstimateSettings, ProjectionSettings
from taskgroup.estimate.valuers import finetune_valuer, gradient_valuer, project_data
from taskgroup.models.training import TrainSettings, evaluate, fit, train_new_model
from taskgroup.report.validation import agreement

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def training(section: dict) -> TrainSettings:
    return TrainSettings(section["epochs"], section["lr"], section["batch_size"],
                         section["weight_decay"])


def finetuning(config: dict, seed_offset: int = 0) -> FinetuneSettings:
    settings = FinetuneSettings.from_mapping(config["finetune"])
    return dataclasses.replace(settings, seed=settings.seed + seed_offset)


def setup(config: dict):
    """Data, meta-initialization and task names, built the way the workflow builds them."""
    torch.set_num_threads(1)
    examples, tasks = generate_planted(planted_spec(config["dataset"]["planted"]))
    data = build_task_data(examples, tasks)
    every = torch.arange(data.n_tasks)
    meta = train_new_model(data, every, config["model"]["hidden_sizes"],
                           training(config["meta_init"]), config["meta_init"]["seed"],
                           torch.device("cpu"))
    return data, tasks, meta


def gradient_path(config, data, meta, subsets):
    """Projection of every train/val example, then the estimate of every subset: the
    library's projection and valuer, as the stages project_gradients and estimate_subsets
    call them (without the Parquet round trip)."""
    projection = config["projection"]
    started = time.perf_counter()
    projector = make_projector(meta, ProjectionSettings.from_mapping(projection))
    splits = project_data(meta, projector, data, projection["batch_size"])
    projection_seconds = time.perf_counter() - started
    projected_mb = sum(s.z.numel() * s.z.element_size() for s in splits.values()) / 2**20
    if subsets.empty:
        return None, projection_seconds, projection_seconds, projected_mb
    value = gradient_valuer(
        splits, projector, parameter_norm(meta), data.task_names, data.types,
        GradientEstimateSettings(**config["gradient_estimate"]), config["evaluation"]["metric"],
    )
    values = value(subsets)
    total = time.perf_counter() - started
    return values.drop(columns="relative_shift"), projection_seconds, total, projected_mb


def finetune_path(config, data, meta, subsets, seed_offset=0):
    """Real fine-tuning of every subset: the library's valuer, as finetune_subsets calls it."""
    metric = config["evaluation"]["metric"]
    return finetune_valuer(meta, data, finetuning(config, seed_offset), metric)(subsets)


def one_epoch_seconds(config, data, meta):
    """One epoch of training on all tasks' training examples, from the meta-initialization."""
    import copy

    model = copy.deepcopy(meta)
    settings = training(config["meta_init"])
    one = TrainSettings(1, settings.lr, settings.batch_size, settings.weight_decay)
    started = time.perf_counter()
    fit(model, data, torch.arange(data.n_tasks), one, seed=0)
    return time.perf_counter() - started


def _child(job, config, count, queue):
    data, tasks, meta = setup(config)
    subsets = random_design(data.task_names, config["subsets"]["size"], count,
                             config["subsets"]["seed"])
    baseline = peak_rss_mb()
    warm_up = subsets[subsets["subset_id"] < 2]  # first calls pay one-off library set-up
    if job == "finetune":
        finetune_path(config, data, meta, warm_up, seed_offset=99)
    elif job == "gradient":
        gradient_path(config, data, meta, warm_up)
    if job in ("projection", "gradient"):
        values, projection_s, seconds, projected_mb = gradient_path(
            config, data, meta, subsets if job == "gradient" else subsets.iloc[:0]
        )
        extra = {"projection_seconds": projection_s, "projected_mb": projected_mb,
                 "epoch_seconds": one_epoch_seconds(config, data, meta)}
    else:
        started = time.perf_counter()
        values = finetune_path(config, data, meta, subsets, int(job == "finetune_other_seed"))
        seconds, extra = time.perf_counter() - started, {}
    base = evaluate(meta, data, torch.arange(data.n_tasks), splits=("val",),
                    metric=config["evaluation"]["metric"])
    queue.put({"values": values, "seconds": seconds, "peak_mb": peak_rss_mb() - baseline,
               "base": base.set_index("task")["loss"], "planted": tasks, **extra})


def measure(job, config, count):
    """Run one path in a fresh process, so its peak memory is its own."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(job, config, count, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--subsets", type=int, nargs="+", default=[200, 600])
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    # The schema fills in the defaults, as it does for the workflow.
    validate(config, str(ROOT / "config" / "config.schema.yaml"))
    k = config["dataset"]["planted"]["n_groups"] * config["dataset"]["planted"]["tasks_per_group"]
    print(f"config {args.config}: k = {k} tasks, subset size {config['subsets']['size']}, "
          f"projection {config['projection']['structure']}, l2 "
          f"{config['gradient_estimate']['l2']}, {torch.get_num_threads()} thread(s) per run\n")
    rows = []
    for count in args.subsets:
        projection = measure("projection", config, count)
        gradient = measure("gradient", config, count)
        real = measure("finetune", config, count)
        other = measure("finetune_other_seed", config, count)
        base = real["base"]
        trivial = real["values"].copy()
        trivial["loss"] = base.loc[trivial["task"]].to_numpy()
        names = list(base.index)
        n_clusters = config["clustering"]["n_clusters"]
        clustering = {"n_clusters": n_clusters, "method": "spectral", "similarity": "profile",
                      "seed": 0}
        estimate_vs_real = agreement(gradient["values"], real["values"], base, names, clustering)
        floor = agreement(other["values"], real["values"], base, names, clustering)
        trivial_error = agreement(trivial, real["values"], base, names, clustering)
        rows.append({"subsets": count, "what": "gradient vs real", **estimate_vs_real})
        rows.append({"subsets": count, "what": "real vs real (noise floor)", **floor})
        rows.append({"subsets": count, "what": "no change vs real",
                     "median_rel_error": trivial_error["median_rel_error"]})
        print(f"m = {count} subsets")
        print(f"  gradient path: {gradient['seconds']:.2f} s (projection "
              f"{gradient['projection_seconds']:.3f} s), peak memory +{gradient['peak_mb']:.1f} MB")
        print(f"  projection stage alone (no warm-up): peak memory +{projection['peak_mb']:.1f} MB "
              f"(the projected gradients take {projection['projected_mb']:.2f} MB)")
        print(f"  real fine-tuning: {real['seconds']:.2f} s, peak memory +{real['peak_mb']:.1f} MB")
        print(f"  speedup real / gradient: {real['seconds'] / gradient['seconds']:.1f}x")
        print(f"  projection / one training epoch over the same examples: "
              f"{gradient['projection_seconds'] / gradient['epoch_seconds']:.2f} "
              f"({gradient['epoch_seconds']:.3f} s per epoch)\n")
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
