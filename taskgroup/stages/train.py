"""Stage train_group_models: the group models of one batch of groups, every seed, one variant,
trained in one process; models already trained with the same inputs are reused."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from taskgroup.data.tables import (
    GROUP_DIAGNOSTICS,
    GROUP_RESULTS,
    read_table,
    write_atomically,
    write_table,
)
from taskgroup.group import groupings
from taskgroup.models import reweighting
from taskgroup.models.holdout import SELECTION_SPLIT, SelectionSplit, hold_out_selection_rows
from taskgroup.models.metrics import resolve_metrics
from taskgroup.models.stacked import ModelSpec, train_new_models
from taskgroup.models.training import (
    TrainSettings,
    budget_epochs,
    evaluate,
    patience_epochs,
)
from taskgroup.models.within_group import TrainingOptions, train_with_options
from taskgroup.seeding import derived_seed
from taskgroup.stages.common import (
    check_option_output,
    load_task_data,
    prepare_torch,
    save_model_atomically,
)

log = logging.getLogger(__name__)

# The files of one trained group in its folder <models_dir>/<group_key>/.
RESULTS_FILE = "results.parquet"
DIAGNOSTICS_FILE = "diagnostics.parquet"
FINGERPRINT_FILE = "fingerprint.txt"


def model_file(seed: int) -> str:
    return f"model_seed{int(seed)}.pt"


def train_group_models(
    examples_path, tasks_path, groups: dict, results_path, models_dir, code_paths: list,
    hidden_sizes, training: dict, seeds: list, threads: int = 1, metric: str = "auto",
    options: dict | None = None, variant: str = "plain", diagnostics_path=None, *,
    selection: dict, budget: str, patience: float | None,
) -> None:
    """Train one multi-head model per group of ``groups`` (group_key -> member task names)
    and seed; write their per-task loss and metric on the splits val_stop, val_select and
    test (group_results table, with the ``variant`` name, each task's loss weight and
    whether the seed's training loss ended far above its start, ``diverged``) to
    ``results_path``, and per group, in ``models_dir``/<group_key>/, the models (one per
    seed), that group's rows of the table and a fingerprint of everything they came from.

    A group whose folder holds a fingerprint equal to this job's (same members, settings,
    seeds, variant, examples, tasks and library code ``code_paths``) and all its files is
    read back, not retrained: a batch job rerun because a clustering added groups trains
    only those. The fingerprint is written last, so a job killed mid-way leaves none.

    ``selection``: the fields of :class:`taskgroup.models.holdout.SelectionSplit` (fraction,
    seed). Each task's validation rows are cut into a stopping part ("val_stop": the best
    epoch is chosen on it, and the alignment phase and diagnostics read it) and a selection
    part ("val_select": no model is fitted or stopped on it), the same cut in every group.

    ``budget`` (evaluation.training_budget): "steps" trains every model for the optimizer
    steps the one-group model takes in ``training["epochs"]`` epochs, "epochs" for that many
    passes over its own examples (see :func:`taskgroup.models.training.budget_epochs`).

    Each model's seed is derived from (seed, sorted member names), so a group gets the same
    models in whichever grouping and batch it appears, and every variant starts from the
    same initialization (paired comparisons). Without alignment and diagnostics the models
    are trained together (:func:`taskgroup.models.stacked.train_new_models`), otherwise
    one after another; the results are the same up to float rounding.

    ``options``: the enabled options of the final-training ``variant`` (reweighting,
    alignment, diagnostics; see :func:`taskgroup.models.options.variant_options`). The
    diagnostics of all groups and seeds (with variant, group_key and seed columns) go to
    ``diagnostics_path``.

    Raises ValueError if a key does not match its members' hash (the grouping tables changed
    under the job).
    """
    settings = dict(hidden_sizes=hidden_sizes, training=training, seeds=seeds, metric=metric,
                    options=options or {}, variant=variant, selection=selection, budget=budget,
                    patience=patience)
    options = TrainingOptions.from_dict(options)
    check_option_output("diagnostics", options.diagnostics.enabled, diagnostics_path)
    for key, members in groups.items():
        if groupings.group_key(members) != key:
            raise ValueError(
                f"group {key}: its members {sorted(members)[:5]}... hash to "
                f"{groupings.group_key(members)}; the grouping tables changed under the job"
            )
    started = time.perf_counter()
    inputs = _input_fingerprint([examples_path, tasks_path, *code_paths], settings)
    fingerprints = {key: _group_fingerprint(inputs, members) for key, members in groups.items()}
    folders = {key: Path(models_dir) / key for key in groups}
    reused = {
        key for key in groups
        if _is_complete(folders[key], fingerprints[key], seeds, options.diagnostics.enabled)
    }
    to_train = {key: members for key, members in groups.items() if key not in reused}
    log.info(
        "%s: %d groups, %d already trained with these inputs (reused), %d to train "
        "(%d models)", variant, len(groups), len(reused), len(to_train),
        len(to_train) * len(seeds),
    )
    if to_train:
        _train_and_store(
            examples_path, tasks_path, to_train, folders, fingerprints, hidden_sizes,
            training, seeds, threads, metric, options, variant, selection, budget, patience,
        )
    frames = [read_table(folders[key] / RESULTS_FILE, GROUP_RESULTS) for key in sorted(groups)]
    write_table(pd.concat(frames, ignore_index=True), results_path)
    if options.diagnostics.enabled:
        tables = [read_table(folders[key] / DIAGNOSTICS_FILE, GROUP_DIAGNOSTICS)
                  for key in sorted(groups)]
        write_table(pd.concat(tables, ignore_index=True), diagnostics_path)
    log.info("%s: done in %.1f s", variant, time.perf_counter() - started)


def _train_and_store(
    examples_path, tasks_path, groups, folders, fingerprints, hidden_sizes, training, seeds,
    threads, metric, options, variant, selection, budget, patience,
) -> None:
    """Train every seed of every group of ``groups`` and write each group's folder."""
    device = prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = hold_out_selection_rows(data, SelectionSplit(**selection)).to(device)
    resolve_metrics(metric, data.types, data.task_names)  # fail before training
    settings = TrainSettings(**training, select_best_epoch=True)
    keys = sorted(groups)
    indices = {key: data.task_indices(list(groups[key])).to(device) for key in keys}
    train_tasks = data.splits["train"].task_index
    epochs = {
        key: budget_epochs(
            settings.epochs, settings.batch_size,
            int(torch.isin(train_tasks, indices[key]).sum()), train_tasks.numel(), budget,
        )
        for key in keys
    }
    patiences = {key: patience_epochs(patience, epochs[key]) for key in keys}
    log.info("training budget %r: %d to %d epochs per model; %s", budget,
             min(epochs.values()), max(epochs.values()),
             "no early stop" if patience is None else
             f"early stop after {patience:g} of its epochs without a lower stopping loss")
    weights = {}
    if options.reweighting.enabled:
        for key in keys:
            weights[key] = reweighting.task_weights(data, indices[key], options.reweighting.rank)
            log.info("group %s task weights (rank %d): %s", key, options.reweighting.rank,
                     weights[key].set_index("task")["weight"].round(3).to_dict())
    jobs = [(key, seed) for key in keys for seed in seeds]
    started = time.perf_counter()
    if options.alignment.enabled or options.diagnostics.enabled:
        # Hooks and a second phase per model: one training after another.
        trained = []
        for key, seed in jobs:
            result = train_with_options(
                data, indices[key], hidden_sizes,
                replace(settings, epochs=epochs[key], patience=patiences[key]),
                derived_seed(seed, *sorted(groups[key])), device, options,
                weights=weights.get(key),
            )
            trained.append((result.model, result.loss_rose_far, result.diagnostics))
    else:
        vectors = {key: reweighting.weight_vector(table, data, device)
                   for key, table in weights.items()}
        specs = [
            ModelSpec(
                indices[key], derived_seed(seed, *sorted(groups[key])), vectors.get(key),
                epochs[key], patiences[key],
            )
            for key, seed in jobs
        ]
        trained = [
            (model, history.rose_far, None)
            for model, history in train_new_models(data, specs, hidden_sizes, settings, device)
        ]
    seconds = time.perf_counter() - started
    log.info("%s: trained %d models of %d groups in %.1f s (%.1f models/s)", variant,
             len(jobs), len(keys), seconds, len(jobs) / max(seconds, 1e-9))
    by_group: dict[str, list] = {key: [] for key in keys}
    for (key, seed), (model, rose_far, diagnostics) in zip(jobs, trained):
        by_group[key].append((seed, model, rose_far, diagnostics))
    for key in keys:
        folder = folders[key]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / FINGERPRINT_FILE).unlink(missing_ok=True)
        loss_weights = (
            {} if key not in weights else weights[key].set_index("task")["weight"].to_dict()
        )
        frames, diagnostics_tables = [], []
        for seed, model, rose_far, diagnostics in by_group[key]:
            results = evaluate(model, data, indices[key], ("val", SELECTION_SPLIT, "test"),
                               metric)
            results["split"] = results["split"].replace({"val": "val_stop"})
            results.insert(0, "seed", int(seed))
            results.insert(0, "group_key", key)
            results.insert(0, "variant", variant)
            results["loss_weight"] = results["task"].map(loss_weights).fillna(1.0)
            results["diverged"] = rose_far
            frames.append(results[list(GROUP_RESULTS)])
            log.info(
                "group %s (%d tasks), %s, seed %d: mean test %s %.4f", key,
                len(groups[key]), variant, seed, metric,
                frames[-1].loc[frames[-1]["split"] == "test", "metric"].mean(),
            )
            if diagnostics is not None:
                diagnostics.insert(0, "seed", int(seed))
                diagnostics.insert(0, "group_key", key)
                diagnostics.insert(0, "variant", variant)
                diagnostics_tables.append(diagnostics)
            save_model_atomically(model.cpu(), data.task_names, folder / model_file(seed))
        write_table(pd.concat(frames, ignore_index=True), folder / RESULTS_FILE)
        if diagnostics_tables:
            write_table(pd.concat(diagnostics_tables, ignore_index=True),
                        folder / DIAGNOSTICS_FILE)
        write_atomically(folder / FINGERPRINT_FILE,
                         lambda partial, text=fingerprints[key]: Path(partial).write_text(text))


def _input_fingerprint(paths: list, settings: dict) -> str:
    """SHA-256 of the files' contents (in the given order) and the settings (as sorted
    JSON)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _group_fingerprint(inputs: str, members) -> str:
    return hashlib.sha256(
        (inputs + "\n" + "\n".join(sorted(map(str, members)))).encode()
    ).hexdigest()


def _is_complete(folder: Path, fingerprint: str, seeds, diagnostics: bool) -> bool:
    """Whether ``folder`` holds a group trained from exactly these inputs, all files there."""
    marker = folder / FINGERPRINT_FILE
    needed = [RESULTS_FILE, *map(model_file, seeds)] + ([DIAGNOSTICS_FILE] if diagnostics else [])
    return (
        marker.is_file() and marker.read_text() == fingerprint
        and all((folder / name).is_file() for name in needed)
    )
