"""Stages that train networks: meta-initialization, per-subset fine-tuning, group models."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pandas as pd
import torch

from taskgroup.data import designs as subsets_lib
from taskgroup.data.tables import write_table
from taskgroup.estimate.finetune import finetune_subsets
from taskgroup.group import groupings
from taskgroup.models import reweighting
from taskgroup.models.metrics import resolve_metrics
from taskgroup.models.network import load_checkpoint
from taskgroup.models.training import TrainSettings, evaluate
from taskgroup.models.within_group import TrainingOptions, train_with_options
from taskgroup.seeding import derived_seed
from taskgroup.stages.common import load_task_data, prepare_torch, save_model_atomically

log = logging.getLogger(__name__)


def _check_option_output(name: str, enabled: bool, path) -> None:
    """An option's extra output must be given exactly when the option is on."""
    if enabled != (path is not None):
        raise ValueError(
            f"training_options {name}: enabled={enabled} but its output path is {path!r}"
        )


def train_meta_init(
    examples_path, tasks_path, model_path, metrics_path, hidden_sizes, training: dict,
    seed: int, threads: int = 1, metric: str = "auto", options: dict | None = None,
    weights_path=None, diagnostics_path=None,
) -> None:
    """Train the multi-head model on all tasks; save it and its per-task validation metrics
    (columns task, split, loss, metric (``metric``, evaluation.metric), n_examples).

    ``options``: the enabled ``training_options.meta_init`` (reweighting, diagnostics; see
    :mod:`taskgroup.models.within_group`); their tables go to ``weights_path`` (task weights) and
    ``diagnostics_path``."""
    options = TrainingOptions.from_dict(options)
    if options.alignment.enabled:
        raise ValueError("training_options.meta_init: alignment is only for final models")
    _check_option_output("reweighting", options.reweighting.enabled, weights_path)
    _check_option_output("diagnostics", options.diagnostics.enabled, diagnostics_path)
    device = prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = data.to(device)
    settings = TrainSettings(**training)
    every_task = torch.arange(data.n_tasks, device=device)
    resolve_metrics(metric, data.types, data.task_names)  # fail before training
    started = time.perf_counter()
    trained = train_with_options(
        data, every_task, hidden_sizes, settings, seed, device, options
    )
    model = trained.model
    if trained.weights is not None:
        log.info("task weights (rank %d): %s", options.reweighting.rank,
                 trained.weights.set_index("task")["weight"].round(3).to_dict())
        write_table(trained.weights, weights_path)
    if trained.diagnostics is not None:
        write_table(trained.diagnostics, diagnostics_path)
    metrics = evaluate(model, data, every_task, splits=("val",), metric=metric)
    log.info(
        "meta-initialization: %d tasks, %d epochs in %.1f s; mean val loss %.4f, %s %.4f",
        data.n_tasks, settings.epochs, time.perf_counter() - started,
        metrics["loss"].mean(), metric, metrics["metric"].mean(),
    )
    save_model_atomically(model.cpu(), data.task_names, model_path)
    write_table(metrics, metrics_path)


def finetune_valuer(
    examples_path, tasks_path, model_path, training: dict, seed: int, threads: int = 1,
    metric: str = "auto",
) -> tuple[list[str], Callable[[pd.DataFrame], pd.DataFrame]]:
    """The estimator "finetune" as a function: load the data and the meta-initialization
    once and return ``(task_names, value)``, where ``value(subsets)`` fine-tunes a copy of the
    meta-initialization on each subset of a long subsets table (subset_id, task) and returns
    its subset_values table (estimator "finetune", no design column; each subset's seed is
    derived from (seed, subset_id), see :func:`taskgroup.estimate.finetune.finetune_subsets`)."""
    device = prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = data.to(device)
    meta_model = load_checkpoint(model_path, data.task_names).to(device)
    settings = TrainSettings(**training)

    def value(subsets: pd.DataFrame) -> pd.DataFrame:
        return finetune_subsets(meta_model, data, subsets, settings, seed, metric=metric)

    return list(data.task_names), value


def finetune_chunk(
    examples_path, tasks_path, model_path, subsets_path, output_path, chunk: int,
    chunk_size: int, training: dict, seed: int, threads: int = 1, metric: str = "auto",
) -> None:
    """Fine-tune the meta-initialization on every subset of one chunk; write their values."""
    _, value = finetune_valuer(
        examples_path, tasks_path, model_path, training, seed, threads, metric
    )
    mine = subsets_lib.read_chunk(subsets_path, chunk, chunk_size)
    log.info("chunk %d: %d subsets", chunk, mine["subset_id"].nunique())
    values = value(mine)
    values["design"] = subsets_lib.design_of(mine, subsets_path)
    write_table(values, output_path)


def train_group_model(
    examples_path, tasks_path, members: list, group_key: str, results_path, model_paths: list,
    hidden_sizes, training: dict, seeds: list, threads: int = 1, metric: str = "auto",
    options: dict | None = None, variant: str = "plain", diagnostics_path=None,
) -> None:
    """Train one multi-head model per seed on the tasks ``members``; write their per-task
    val and test loss and metric (``metric``, evaluation.metric; group_results table, with
    the ``variant`` name and each task's loss weight) and the models (one per seed, in the
    order of ``seeds``).

    Each model's seed is derived from (seed, sorted member names), so a group gets the same
    models in whichever grouping it appears, and every variant starts from the same
    initialization (paired comparisons).

    ``options``: the enabled options of the final-training ``variant`` (reweighting,
    alignment, diagnostics; see :func:`taskgroup.models.options.variant_options`). The
    diagnostics of all seeds (with variant, group_key and seed columns) go to
    ``diagnostics_path``.
    """
    options = TrainingOptions.from_dict(options)
    _check_option_output("diagnostics", options.diagnostics.enabled, diagnostics_path)
    if groupings.group_key(members) != group_key:
        raise ValueError(
            f"group {group_key}: its members {sorted(members)[:5]}... hash to "
            f"{groupings.group_key(members)}; the grouping tables changed under the job"
        )
    if len(model_paths) != len(seeds):
        raise ValueError(f"{len(seeds)} seeds but {len(model_paths)} model paths")
    device = prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = data.to(device)
    indices = data.task_indices(list(members)).to(device)
    resolve_metrics(metric, data.types, data.task_names)  # fail before training
    settings = TrainSettings(**training, select_best_epoch=True)
    weights = None
    if options.reweighting.enabled:
        weights = reweighting.task_weights(data, indices, options.reweighting.rank)
        log.info("group %s task weights (rank %d): %s", group_key, options.reweighting.rank,
                 weights.set_index("task")["weight"].round(3).to_dict())
    loss_weights = (
        {} if weights is None else weights.set_index("task")["weight"].to_dict()
    )
    frames, diagnostics = [], []
    for seed, model_path in zip(seeds, model_paths):
        started = time.perf_counter()
        trained = train_with_options(
            data, indices, hidden_sizes, settings, derived_seed(seed, *sorted(members)),
            device, options, weights=weights,
        )
        model = trained.model
        if trained.diagnostics is not None:
            table = trained.diagnostics
            table.insert(0, "seed", int(seed))
            table.insert(0, "group_key", group_key)
            table.insert(0, "variant", variant)
            diagnostics.append(table)
        results = evaluate(model, data, indices, ("val", "test"), metric)
        results = results.drop(columns="n_examples")
        results.insert(0, "seed", int(seed))
        results.insert(0, "group_key", group_key)
        results.insert(0, "variant", variant)
        results["loss_weight"] = results["task"].map(loss_weights).fillna(1.0)
        log.info(
            "group %s (%d tasks), %s, seed %d: trained in %.1f s; mean test %s %.4f",
            group_key, len(members), variant, seed, time.perf_counter() - started, metric,
            results.loc[results["split"] == "test", "metric"].mean(),
        )
        save_model_atomically(model.cpu(), data.task_names, model_path)
        frames.append(results)
    if diagnostics:
        write_table(pd.concat(diagnostics, ignore_index=True), diagnostics_path)
    write_table(pd.concat(frames, ignore_index=True), results_path)
