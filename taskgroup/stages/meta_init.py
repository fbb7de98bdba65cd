"""Stage train_meta_init: the multi-head model on all tasks, from which every subset is valued."""

from __future__ import annotations

import logging
import time

import torch

from taskgroup.data.tables import write_table
from taskgroup.models.metrics import resolve_metrics
from taskgroup.models.training import TrainSettings, evaluate
from taskgroup.models.within_group import TrainingOptions, train_with_options
from taskgroup.stages.common import (
    check_option_output,
    load_task_data,
    prepare_torch,
    save_model_atomically,
)

log = logging.getLogger(__name__)


def train_meta_init(
    examples_path, tasks_path, model_path, metrics_path, hidden_sizes, training: dict,
    seed: int, threads: int = 1, metric: str = "auto", options: dict | None = None,
    weights_path=None, diagnostics_path=None, keep_best_epoch: bool = False,
) -> None:
    """Train the multi-head model on all tasks; save it and its per-task validation metrics
    (columns task, split, loss, metric (``metric``, evaluation.metric), n_examples).

    ``keep_best_epoch``: keep the parameters of the epoch with the lowest mean validation
    loss over the tasks (meta_init.keep_best_epoch) rather than the last epoch's. An
    over-fit meta-initialization leaves fine-tuning on a subset nothing to do but over-fit
    further, and the values f_i(S) of two fine-tunings of one subset then disagree.

    ``options``: the enabled ``training_options.meta_init`` (reweighting, diagnostics; see
    :mod:`taskgroup.models.within_group`); their tables go to ``weights_path`` (task weights) and
    ``diagnostics_path``."""
    options = TrainingOptions.from_dict(options)
    if options.alignment.enabled:
        raise ValueError("training_options.meta_init: alignment is only for final models")
    check_option_output("reweighting", options.reweighting.enabled, weights_path)
    check_option_output("diagnostics", options.diagnostics.enabled, diagnostics_path)
    device = prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = data.to(device)
    settings = TrainSettings(**training, select_best_epoch=keep_best_epoch)
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
        "meta-initialization: %d tasks, %d epochs in %.1f s, %s; mean val loss %.4f, %s %.4f",
        data.n_tasks, settings.epochs, time.perf_counter() - started,
        "the last kept" if trained.kept_epoch is None
        else f"epoch {trained.kept_epoch} kept (lowest mean val loss)",
        metrics["loss"].mean(), metric, metrics["metric"].mean(),
    )
    save_model_atomically(model.cpu(), data.task_names, model_path)
    write_table(metrics, metrics_path)


