"""Stage train_group_model: one multi-head model per group of tasks, every seed and variant."""

from __future__ import annotations

import logging
import time

import pandas as pd

from taskgroup.data.tables import GROUP_RESULTS, write_table
from taskgroup.group import groupings
from taskgroup.models import reweighting
from taskgroup.models.holdout import SELECTION_SPLIT, SelectionSplit, hold_out_selection_rows
from taskgroup.models.metrics import resolve_metrics
from taskgroup.models.training import TrainSettings, evaluate
from taskgroup.models.within_group import TrainingOptions, train_with_options
from taskgroup.seeding import derived_seed
from taskgroup.stages.common import (
    check_option_output,
    load_task_data,
    prepare_torch,
    save_model_atomically,
)

log = logging.getLogger(__name__)


def train_group_model(
    examples_path, tasks_path, members: list, group_key: str, results_path, model_paths: list,
    hidden_sizes, training: dict, seeds: list, threads: int = 1, metric: str = "auto",
    options: dict | None = None, variant: str = "plain", diagnostics_path=None, *,
    selection: dict,
) -> None:
    """Train one multi-head model per seed on the tasks ``members``; write their per-task
    loss and metric (``metric``, evaluation.metric; group_results table, with the
    ``variant`` name, each task's loss weight and whether the seed's training loss ended far
    above its start, ``diverged``) on the splits val_stop, val_select and test, and the
    models (one per seed, in the order of ``seeds``).

    ``selection``: the fields of :class:`taskgroup.models.holdout.SelectionSplit` (fraction,
    seed). Each task's validation rows are cut into a stopping part ("val_stop": the best
    epoch is chosen on it, and the alignment phase and diagnostics read it) and a selection
    part ("val_select": no model is fitted or stopped on it), the same cut in every group.

    Each model's seed is derived from (seed, sorted member names), so a group gets the same
    models in whichever grouping it appears, and every variant starts from the same
    initialization (paired comparisons).

    ``options``: the enabled options of the final-training ``variant`` (reweighting,
    alignment, diagnostics; see :func:`taskgroup.models.options.variant_options`). The
    diagnostics of all seeds (with variant, group_key and seed columns) go to
    ``diagnostics_path``.
    """
    options = TrainingOptions.from_dict(options)
    check_option_output("diagnostics", options.diagnostics.enabled, diagnostics_path)
    if groupings.group_key(members) != group_key:
        raise ValueError(
            f"group {group_key}: its members {sorted(members)[:5]}... hash to "
            f"{groupings.group_key(members)}; the grouping tables changed under the job"
        )
    if len(model_paths) != len(seeds):
        raise ValueError(f"{len(seeds)} seeds but {len(model_paths)} model paths")
    device = prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = hold_out_selection_rows(data, SelectionSplit(**selection)).to(device)
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
        results = evaluate(model, data, indices, ("val", SELECTION_SPLIT, "test"), metric)
        results["split"] = results["split"].replace({"val": "val_stop"})
        results.insert(0, "seed", int(seed))
        results.insert(0, "group_key", group_key)
        results.insert(0, "variant", variant)
        results["loss_weight"] = results["task"].map(loss_weights).fillna(1.0)
        results["diverged"] = trained.loss_rose_far
        results = results[list(GROUP_RESULTS)]
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
