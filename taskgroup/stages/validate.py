"""Stage: check the gradient estimator against real fine-tuning on held-out subsets."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd
import torch

from taskgroup.data.tables import SUBSET_VALUES, SUBSETS, read_table, write_table
from taskgroup.estimate.finetune import (
    FinetuneSettings,
    finetune_values,
    finetuned_models,
    values_of_models,
)
from taskgroup.estimate.validity import first_order_validity
from taskgroup.group.clustering import ClusteringSettings
from taskgroup.models.network import load_checkpoint
from taskgroup.models.training import evaluate
from taskgroup.report.validation import (
    agreement,
    per_task_relative_error,
    reference_clusters,
)
from taskgroup.stages.common import load_task_data, prepare_torch

log = logging.getLogger(__name__)


def validate_estimator(
    examples_path, tasks_path, model_path, subsets_path, estimate_path, per_subset_path,
    summary_path, validity_path, figure_path, n_subsets: int, seed: int,
    finetune: FinetuneSettings, clustering: ClusteringSettings, clustering_method: str, scales,
    threads: int = 1, metric: str = "auto",
) -> None:
    """Real fine-tuning (two seeds) of ``n_subsets`` subsets drawn from the design, compared
    with the gradient estimate of the same subsets and with the no-change estimate (the
    affinities of each are clustered by ``clustering_method`` under ``clustering``). The
    first seed is ``finetune``'s (so these fine-tunings are finetune_subsets'), the second
    one is that seed + 1.

    Writes the per-(subset, task) errors, the summary figures of each comparison (the
    affinity and cluster figures only mean something when n_subsets is a sizeable share of
    the design), the first-order validity curve and a figure.
    """
    device = prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = data.to(device)
    meta = load_checkpoint(model_path, data.task_names).to(device)
    design = read_table(subsets_path, SUBSETS)
    every_id = np.sort(design["subset_id"].unique())
    chosen = np.sort(
        np.random.default_rng(seed).choice(every_id, min(n_subsets, len(every_id)), replace=False)
    )
    held_out = design[design["subset_id"].isin(chosen)]
    estimate = read_table(estimate_path, SUBSET_VALUES)
    estimate = estimate[estimate["subset_id"].isin(chosen)].drop(
        columns=["relative_shift"], errors="ignore"
    )
    tuned = finetuned_models(meta, data, held_out, finetune)
    real = values_of_models(tuned, data, metric)
    other_seed = dataclasses.replace(finetune, seed=finetune.seed + 1)
    other = finetune_values(meta, data, held_out, other_seed, metric)
    base = evaluate(meta, data, torch.arange(data.n_tasks, device=device), ("val",), metric)
    base_loss = base.set_index("task")["loss"]
    trivial = real.copy()
    trivial["loss"] = base_loss.loc[trivial["task"]].to_numpy()
    comparisons = {"gradient": estimate, "finetune_other_seed": other, "no_change": trivial}
    per_subset, summary = [], []
    # clustered once for the three comparisons
    clusters_of_real = reference_clusters(real, data.task_names, clustering, clustering_method)
    for name, values in comparisons.items():
        errors = per_task_relative_error(values, real)
        errors.insert(0, "estimator", name)
        per_subset.append(errors)
        figures = agreement(
            values, real, base_loss, data.task_names, clustering, clustering_method,
            clusters_of_real,
        )
        summary.append({"estimator": name, "n_subsets": len(chosen), **figures})
    summary = pd.DataFrame(summary)
    log.info("estimator validation on %d subsets:\n%s", len(chosen), summary.to_string())
    curves = []
    for subset_id, indices, model in tuned:  # the fine-tunings of ``real``
        curves.append(first_order_validity(meta, model, data, indices, scales, subset_id))
    curve = pd.concat(curves, ignore_index=True)
    write_table(pd.concat(per_subset, ignore_index=True), per_subset_path)
    write_table(summary, summary_path)
    write_table(curve, validity_path)
    from taskgroup.report.plots import estimator_validation

    estimator_validation(pd.concat(per_subset, ignore_index=True), curve, figure_path)
