"""Stages of the held-out subsets: choose the fine-tuning rate and the gradient estimate's l2
on them, then check the estimator against real fine-tuning of them."""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import pandas as pd
import torch

from taskgroup.data.designs import design_of
from taskgroup.data.examples import TaskData
from taskgroup.data.tables import (
    L2_CURVE,
    SUBSET_VALUES,
    SUBSETS,
    chosen_candidate,
    read_table,
    write_table,
)
from taskgroup.estimate.finetune import (
    FinetuneSettings,
    finetune_values,
    finetuned_models,
    values_of_models,
)
from taskgroup.estimate.settings import GradientEstimateSettings
from taskgroup.estimate.task_scales import fit_task_scales, scale_changes
from taskgroup.estimate.validity import first_order_validity
from taskgroup.group.clustering import ClusteringSettings
from taskgroup.models.network import MultiHeadNet, load_checkpoint
from taskgroup.models.training import evaluate
from taskgroup.report.validation import (
    agreement,
    l2_curve,
    lr_curve,
    per_task_relative_error,
    reference_clusters,
)
from taskgroup.stages.common import load_task_data, prepare_torch
from taskgroup.stages.estimate import read_gradient_valuers
from taskgroup.stages.finetune import with_chosen_lr

log = logging.getLogger(__name__)


def held_out_subsets(subsets_path, n_subsets: int, seed: int) -> pd.DataFrame:
    """The subsets table rows of ``n_subsets`` subsets of the design at ``subsets_path``
    (all of them when it has fewer), drawn without replacement with ``seed``: the
    subsets that :func:`calibrate_estimate` and :func:`validate_estimator` fine-tune."""
    design = read_table(subsets_path, SUBSETS)
    every_id = np.sort(design["subset_id"].unique())
    chosen = np.sort(
        np.random.default_rng(seed).choice(every_id, min(n_subsets, len(every_id)), replace=False)
    )
    return design[design["subset_id"].isin(chosen)]


def other_seed(finetune: FinetuneSettings) -> FinetuneSettings:
    """The second real fine-tuning of the validation: ``finetune`` with seed + 1."""
    return dataclasses.replace(finetune, seed=finetune.seed + 1)


def load_held_out(examples_path, tasks_path, model_path, subsets_path, n_subsets: int,
                  seed: int, threads: int) -> tuple[TaskData, MultiHeadNet, pd.DataFrame]:
    """What every stage of the held-out subsets starts from: the task data and the
    meta-initialization, on the device :func:`prepare_torch` picks with ``threads``, and
    the held-out subsets (:func:`held_out_subsets`)."""
    device = prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = data.to(device)
    meta = load_checkpoint(model_path, data.task_names).to(device)
    return data, meta, held_out_subsets(subsets_path, n_subsets, seed)


def meta_validation_loss(meta: MultiHeadNet, data: TaskData, metric: str = "auto") -> pd.Series:
    """The meta-initialization's validation loss per task (indexed by task name): the
    level every subset value is compared with."""
    every_task = torch.arange(data.n_tasks, device=next(meta.parameters()).device)
    return evaluate(meta, data, every_task, ("val",), metric).set_index("task")["loss"]


def with_fixed(candidates, fixed: float | None) -> list[float]:
    """The sorted distinct ``candidates``, with ``fixed`` (the value set in the config,
    which a curve then marks chosen) added when it is not None."""
    return sorted({float(value) for value in candidates} | ({fixed} - {None}))


def lr_curve_on(meta: MultiHeadNet, data: TaskData, subsets: pd.DataFrame,
                finetune: FinetuneSettings, metric: str = "auto") -> pd.DataFrame:
    """The lr curve table (see :func:`taskgroup.report.validation.lr_curve`) of ``subsets``
    (long format: subset_id, task), each fine-tuned from ``meta`` twice, with seeds
    ``finetune.seed`` and ``finetune.seed + 1``, at every rate of
    ``finetune.lr_candidates`` (and at ``finetune.training.lr`` when it is a number,
    which is then the chosen one). Logs each rate's progress and the curve. Raises
    ValueError when there is no rate to try.
    """
    fixed = None if finetune.lr_is_auto else float(finetune.training.lr)
    candidates = with_fixed(finetune.lr_candidates, fixed)
    if not candidates:
        raise ValueError("finetune: no learning rate to calibrate (lr_candidates is empty)")
    n_subsets = subsets["subset_id"].nunique()
    pairs = {}
    started = time.perf_counter()
    for done, lr in enumerate(candidates, start=1):
        settings = finetune.with_lr(lr)
        pairs[lr] = (
            finetune_values(meta, data, subsets, settings, metric),
            finetune_values(meta, data, subsets, other_seed(settings), metric),
        )
        elapsed = time.perf_counter() - started
        log.info("lr %g: %d subsets fine-tuned with 2 seeds (%d of %d rates, %.1f s, "
                 "%.2f fine-tunings/s)", lr, n_subsets, done, len(candidates), elapsed,
                 2 * done * n_subsets / max(elapsed, 1e-9))
    curve = lr_curve(pairs, meta_validation_loss(meta, data, metric), chosen=fixed)
    picked = float(curve.loc[curve["chosen"], "lr"].iloc[0])
    log.info("lr curve, seeds %d and %d (%s):\n%s", finetune.seed, finetune.seed + 1,
             "chosen: the largest rate whose noise floor is within one standard error of the "
             "highest" if fixed is None else "lr set in the config", curve.to_string(index=False))
    if fixed is None and picked == candidates[0] and len(candidates) > 1:
        log.warning(
            "the chosen lr %g is the smallest of finetune.lr_candidates %s: a smaller rate "
            "may agree better still; consider extending the candidates", picked, candidates,
        )
    return curve


def calibrate_finetune(
    examples_path, tasks_path, model_path, subsets_path, lr_curve_path, n_subsets: int,
    seed: int, finetune: FinetuneSettings, threads: int = 1, metric: str = "auto",
) -> None:
    """Fine-tune the held-out subsets (:func:`held_out_subsets`) for real twice, with seeds
    ``finetune.seed`` and ``finetune.seed + 1``, at every rate of
    ``finetune.lr_candidates`` (and at ``finetune.training.lr`` when it is a number), and
    write the lr curve table (see :func:`taskgroup.report.validation.lr_curve`): with lr
    "auto" its chosen rate is the largest whose real-vs-real agreement is within a standard
    error of the best; otherwise the configured rate. It costs 2 x candidates x n_subsets
    fine-tunings (see :func:`lr_curve_on`).
    """
    data, meta, held_out = load_held_out(
        examples_path, tasks_path, model_path, subsets_path, n_subsets, seed, threads
    )
    curve = lr_curve_on(meta, data, held_out, finetune, metric)
    write_table(curve, lr_curve_path)


def calibrate_estimate(
    examples_path, tasks_path, model_path, subsets_path, projected_path, projection_path,
    other_seed_path, l2_curve_path, n_subsets: int, seed: int, finetune: FinetuneSettings,
    estimate: GradientEstimateSettings, l2_candidates, threads: int = 1, metric: str = "auto",
    lr_curve_path=None, task_scales_path=None,
) -> None:
    """Fine-tune the held-out subsets (:func:`held_out_subsets`) for real with seed
    ``finetune.seed + 1`` and estimate them at every l2 of ``l2_candidates`` (and at
    ``estimate.l2`` when it is a number); write those real values (subset_values table,
    read by :func:`validate_estimator` as its second seed) and the l2 curve table (see
    :func:`taskgroup.report.validation.l2_curve`). With ``estimate.l2`` "auto" the curve's
    chosen l2 is its best candidate; otherwise it is ``estimate.l2``. With
    ``estimate.task_scales`` "auto", each candidate's estimates are scaled and offset per
    task by lines fitted against the same real values
    (:func:`taskgroup.estimate.task_scales.fit_task_scales`) before the curve is drawn
    (the correlations do not change; the relative errors are those of the scaled values),
    and the chosen candidate's scales are written to ``task_scales_path``.

    The choice is made against the second seed, so that :func:`validate_estimator`
    judges the chosen estimate against a fine-tuning (seed ``finetune.seed``) that took no
    part in it. ``lr_curve_path``: the lr curve table, needed when ``finetune``'s lr is
    "auto" (see :func:`taskgroup.stages.finetune.with_chosen_lr`). Raises ValueError when
    ``l2_candidates`` is empty with l2 "auto", or when the chosen candidate's scales
    cannot be fitted (see :func:`taskgroup.estimate.task_scales.fit_task_scales`).
    """
    finetune = with_chosen_lr(finetune, lr_curve_path)
    data, meta, held_out = load_held_out(
        examples_path, tasks_path, model_path, subsets_path, n_subsets, seed, threads
    )
    reference = finetune_values(meta, data, held_out, other_seed(finetune), metric)
    reference["design"] = design_of(held_out, subsets_path)
    fixed = None if estimate.l2_is_auto else float(estimate.l2)
    candidates = with_fixed(l2_candidates, fixed)
    if not candidates:
        raise ValueError('gradient_estimate.l2 is "auto" but l2_candidates is empty')
    # unscaled: the task scales are fitted on these values below
    unscaled_settings = dataclasses.replace(estimate, task_scales="none")
    _, valuers = read_gradient_valuers(
        projected_path, projection_path, model_path, tasks_path,
        [unscaled_settings.with_l2(l2) for l2 in candidates], threads, metric,
    )
    started = time.perf_counter()
    estimates = {l2: value(held_out) for l2, value in zip(candidates, valuers)}
    log.info("estimated %d held-out subsets at %d l2 values in %.1f s",
             held_out["subset_id"].nunique(), len(candidates), time.perf_counter() - started)
    base_loss = meta_validation_loss(meta, data, metric)
    scales, unscaled = {}, {}
    if estimate.scales_tasks:
        for l2 in candidates:
            try:
                scales[l2] = fit_task_scales(estimates[l2], reference, base_loss,
                                             data.task_names)
            except ValueError as error:
                # such a candidate stays unscaled in the curve; chosen, it fails below
                unscaled[l2] = str(error)
                continue
            estimates[l2] = scale_changes(estimates[l2], scales[l2], base_loss)
    curve = l2_curve(estimates, reference, base_loss, chosen=fixed)
    picked = float(curve.loc[curve["chosen"], "l2"].iloc[0])
    log.info("l2 curve against the real fine-tuning of seed %d (%s):\n%s", finetune.seed + 1,
             "chosen: the lowest relative error within one standard error of the highest "
             "median within-task Pearson" if fixed is None
             else "l2 set in the config", curve.to_string(index=False))
    if fixed is None and picked in (candidates[0], candidates[-1]) and len(candidates) > 1:
        log.warning(
            "the chosen l2 %g is at the end of gradient_estimate.l2_candidates %s: the best "
            "l2 may lie beyond it; consider extending the candidates", picked, candidates,
        )
    if estimate.scales_tasks:
        if picked in unscaled:
            raise ValueError(f"gradient_estimate.task_scales auto at l2 {picked:g}: "
                             f"{unscaled[picked]}")
        table = scales[picked]
        log.info("task scales at l2 %g (pooled within-task slope %.3f; "
                 "%d of %d candidates unscaled):\n%s",
                 picked, float(table["pooled_scale"].iloc[0]), len(unscaled),
                 len(candidates), table.drop(columns="pooled_scale").to_string(index=False))
        write_table(table, task_scales_path)
    write_table(reference, other_seed_path)
    write_table(curve, l2_curve_path)


def validate_estimator(
    examples_path, tasks_path, model_path, subsets_path, estimate_path, other_seed_path,
    l2_curve_path, per_subset_path, summary_path, validity_path, figure_path, n_subsets: int,
    seed: int, finetune: FinetuneSettings, clustering: ClusteringSettings,
    clustering_method: str, scales, threads: int = 1, metric: str = "auto",
    lr_curve_path=None,
) -> None:
    """Real fine-tuning of ``n_subsets`` subsets drawn from the design
    (:func:`held_out_subsets`) with ``finetune``'s seed (so these fine-tunings are
    finetune_subsets'), compared with the gradient estimate of the same subsets, with
    :func:`calibrate_estimate`'s real fine-tuning of seed + 1 (``other_seed_path``) and
    with the no-change estimate (the affinities of each are clustered by
    ``clustering_method`` under ``clustering``).

    Writes the per-(subset, task) errors, the summary figures of each comparison (with
    the l2 the estimate used, from the l2 curve table at ``l2_curve_path``; the affinity and
    cluster figures only mean something when n_subsets is a sizeable share of the design),
    the first-order validity curve and a figure. ``lr_curve_path``: the lr curve table,
    needed when ``finetune``'s lr is "auto" (see
    :func:`taskgroup.stages.finetune.with_chosen_lr`). Raises ValueError when the second
    seed's table does not hold the same subsets.
    """
    finetune = with_chosen_lr(finetune, lr_curve_path)
    data, meta, held_out = load_held_out(
        examples_path, tasks_path, model_path, subsets_path, n_subsets, seed, threads
    )
    chosen = np.sort(held_out["subset_id"].unique())
    estimate = read_table(estimate_path, SUBSET_VALUES)
    estimate = estimate[estimate["subset_id"].isin(chosen)].drop(
        columns=["relative_shift"], errors="ignore"
    )
    other = read_table(other_seed_path, SUBSET_VALUES)
    if not np.array_equal(np.sort(other["subset_id"].unique()), chosen):
        raise ValueError(
            f"{other_seed_path}: holds other subsets than the {len(chosen)} held-out ones of "
            f"validation.n_subsets = {n_subsets}, seed = {seed}; it is stale, rerun "
            "calibrate_estimate"
        )
    l2 = chosen_candidate(l2_curve_path, L2_CURVE, "l2")
    tuned = finetuned_models(meta, data, held_out, finetune)
    real = values_of_models(tuned, data, metric)
    base_loss = meta_validation_loss(meta, data, metric)
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
    # the l2 the gradient estimate used (NaN on the other rows)
    summary["l2"] = np.where(summary["estimator"] == "gradient", l2, np.nan)
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
