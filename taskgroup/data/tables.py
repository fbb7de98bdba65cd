"""Schemas of the long-format Parquet tables that connect the workflow's stages.

Every artifact has one documented schema here; readers check it at load time, so a
wrong or stale file fails with a message naming the file and the column.

loss and metric columns (every table that has them): loss is the mean, over a task's
examples of the split, of the task type's loss: binary cross-entropy in nats for binary
tasks, squared error (f - y)^2 in label units squared for regression tasks (so the mean
squared error). metric is the configured ``evaluation.metric`` of the task: accuracy,
roc_auc or average_precision (binary tasks), r2 (regression tasks), or with "auto" (the
default) accuracy for binary and R^2 for regression tasks; higher is better for all of
them; NaN where undefined (one class in the split, constant labels). Definitions in
:mod:`taskgroup.models.metrics`.

examples   one row per example: task (str), split ("train" | "val" | "test"),
           feature_* (float32, one column per input feature), label (float32: 0/1 for
           binary tasks, real for regression tasks).
tasks      one row per task, in the canonical task order: task (str), task_index
           (int64, 0..k-1), task_type ("binary" | "regression"), n_train, n_val, n_test (int64),
           planted_group (Int64, null when the dataset has no planted groups).
subsets    one row per (subset, member task): subset_id (int64), task (str), design (str:
           "random" = uniform subsets of a fixed size, "pairs" = every singleton and pair;
           "forward" = the subsets forward selection evaluated, which have values only).
pair_counts one row per ordered task pair: task_i, task_j (str), n_subsets (int64),
           the number of sampled subsets that contain both (task_i == task_j: that
           contain the task).
subset_values one row per (subset, member task, split): subset_id (int64), task (str),
           split (str), loss (float64, mean loss of the task's type, see above), metric
           (float64, the configured metric, see above), estimator (str: "finetune" or "gradient"),
           design (str, the design of the subset);
           estimator "gradient" adds relative_shift (float64, ||P w|| / ||theta*||, both in
           the metric of the projection's preconditioner).
           Design "forward" (subset_values/<estimator>/forward.parquet): every subset that
           forward selection evaluated for any target, accepted or not, each valued once,
           subset ids 0..n-1 in order of first evaluation (targets, then candidates, in task
           order); rows for every member task (the estimator values all members at once),
           though only the target's loss steered the selection.
forward_selection (surrogates/forward_selection.parquet) one row per (target, step) of each
           target's accepted path, targets in task order: target (str), step (int64, 0 =
           the target alone), added (str, the source added at this step; the target itself
           at step 0), size (int64, tasks in the subset after the step, target included,
           step + 1), subset_id (int64, the subset in the forward values table), loss
           (float64, the target's validation loss on that subset, strictly decreasing along
           the path). The selected set of a target is the ``added`` of its steps >= 1.
forward_comparison (surrogates/forward_comparison.parquet, with forward selection enabled)
           one row per target, in task order: target (str); n_surrogate, n_forward, n_both
           (int64: sources the surrogate selects (coefficient < -threshold), sources forward
           selection added, sources in both); jaccard (float64, n_both / |union|; 1 when both
           sets are empty); top_jaccard (float64, the Jaccard overlap of the forward set with
           the surrogate's n_forward most helpful sources, lowest coefficients first: an
           equal-size comparison; 1 when n_forward = 0); alone_loss, forward_loss (float64,
           the estimator's loss of the target alone and on its forward-selected subset);
           predicted_surrogate, predicted_forward (float64, the surrogate's prediction
           intercept + sum of coefficients for the target with the surrogate's, resp.
           forward selection's, sources; an extrapolation where the set's size is far from
           the random design's).
affinity   one row per ordered task pair: task_i, task_j (str), n_subsets (int64),
           raw (float64, mean validation loss of task_i over subsets holding both),
           normalized (float64, sign-flipped, z-scored per target, symmetrized).
projected  one row per training or validation example: task, split (str), label (float32),
           base_output (float32, the output f(x; theta*) of the example's own head at
           the meta-initialization: a logit for binary tasks, the prediction for regression
           tasks), z_* (float32, the projected gradient, one column per dimension).
projection one row: structure, kind (str), seed (int64), dim (int64, the setting),
           nonzeros (Int64, sparse only, else null), preconditioner (str), projected_dim
           (the columns), n_parameters (int64), theta_norm (float64, ||theta*|| in the
           preconditioner's metric: see LayerProjector.parameter_norm).
grouping   one row per task: task (str), group (int64).
group_results one row per (seed, task, split) of the models of one group (a set of tasks,
           trained once per training seed and final-training variant): variant (str,
           "plain" | "reweighted" | "aligned" | "reweighted_aligned"), group_key (str, hash
           of the member task names), seed (int64), task (str), split ("val_stop" | "val_select"
           | "test": the validation rows cut into the part early stopping read and the part
           held out for the recommendation, :mod:`taskgroup.models.holdout`), loss, metric
           (float64, see above), loss_weight (float64, the weight of the task's loss in
           training: 1 unless reweighted, mean 1 over the group's tasks), n_examples (int64,
           the task's rows in the split), diverged (bool, the same on every row of a seed's
           model: its last epoch's training loss ended far above its start, see
           :attr:`taskgroup.models.training.LossHistory.rose_far`).
meta-init metrics (meta_init/val_metrics.parquet) one row per task: task, split ("val"),
           loss, metric (float64, see above), n_examples (int64).
task_weights (training_options.meta_init.reweighting; meta_init/task_weights.parquet; the
           final models' weights are the loss_weight column of group_results) one row per
           trained task: task (str), weight (float64, the loss weight, mean 1 over
           the trained tasks), alpha (float64, ||U_r^T theta_i||), theta_norm (float64,
           ||theta_i||), rank (int64, r used), component (int64, the row's position j),
           singular_value (float64, the j-th largest singular value of Theta; NaN past
           min(p, number of tasks)). Definitions in :mod:`taskgroup.models.reweighting`.
diagnostics (training_options.*.diagnostics; meta_init/diagnostics.parquet,
           final/<variant>/<key>/diagnostics.parquet) one row per (recorded epoch, phase,
           task, split): [variant (str), group_key (str), seed (int64), final models,]
           epoch (int64),
           phase ("joint" | "alignment" | "final"), task (str), split ("train" | "val"),
           loss (float64, unweighted mean loss, see above), grad_cosine (float64, cosine
           of the task's trunk gradient and the summed gradient of the trained tasks),
           grad_norm (float64). Definitions in :mod:`taskgroup.models.diagnostics`.
generalization_gap (evaluation/generalization_gap.parquet) one row per (variant, multi-task
           group model, seed, member task with a single-task model): variant, group_key
           (str), n_tasks (int64, the group's size), seed (int64), task (str), mtl_epoch
           (int64, the kept epoch), mtl_train_loss, mtl_val_loss (float64), stl_epoch (int64,
           the single-task run's epoch of closest training loss), stl_train_loss,
           stl_val_loss, gap (float64, mtl_val_loss - stl_val_loss), final_difference
           (float64, mtl_val_loss minus the single-task model's final val loss).
           Definitions in :mod:`taskgroup.models.diagnostics`.
recommendation groups (recommendation/groups.parquet) one row per task, in task order:
           task (str), group (int64), group_key (str): the groups the recommendation says to
           train (one group = all tasks together; one per task = each alone).
recommendation verdict (recommendation/verdict.parquet) one row per candidate (clustered
           groupings, naive_mtl, stl): candidate, kind ("clustered" | "naive_mtl" | "stl"),
           n_groups, n_seeds (int64), selection_score, selection_sd (float64, the selection
           statistic on the held-out validation rows, lower is better, mean and sd over
           seeds), difference, difference_sd
           (float64, paired by seed against naive_mtl; negative = better), task_difference,
           task_p (float64, the same over tasks and its one-sided p-value), median_selection_metric,
           mean_test_metric, sd_test_metric, median_test_metric (float64), beats_reference,
           eligible, chosen (bool), statistic (str, "metric" | "loss": the selection
           statistic used). Definitions in :mod:`taskgroup.report.recommendation`.
run_decisions (data/run_decisions.parquet, from the preparation; evaluation/run_decisions.parquet,
           the same rows and then the run's) one row per decision, in this order: item
           (str), value (str). The preparation's: dataset_kind; feature (one row per column
           of the examples table the network takes, feature_<column> for a user's table);
           task (one row per task kept, in task order); excluded_task (one row per task left
           out by dataset.<kind>.exclude_tasks); task_type (one row per type). The
           evaluation's: estimator; random_design ("<m> subsets of <a> tasks");
           pair_coverage_mean (subsets holding a pair of tasks, mean over the pairs),
           pair_coverage_min, pairs_in_no_subset ("<n> of <pairs>").
recommendation per-task choice (recommendation/per_task_choice.parquet) one row per task
           with a defined selection score: task, choice (str: the answer, naive_mtl or
           stl, whichever of the task's own models scores lowest on its selection rows),
           selection_score, answer_selection_score, test_metric, answer_test_metric
           (float64, means over seeds). Reported next to the recommendation, not used by it.
l2 curve   (validation/l2_curve.parquet) one row per candidate gradient_estimate.l2: l2
           (float64), n_subsets (int64, the held-out subsets), median_rel_error,
           within_task_pearson, within_task_pearson_se, within_task_spearman (float64: the
           estimate at that l2 against the real fine-tuning of seed finetune.seed + 1;
           correlations are medians over tasks of a per-task correlation across subsets,
           _se the standard error of that median), chosen (bool, exactly one row: the l2
           the subsets were estimated with).
recommendation signal (recommendation/signal.parquet) one row: n_subsets_per_half, n_pairs
           (int64), correlation, p_value, ari, alpha (float64), above_noise (bool): the
           split-half reliability of the higher-order affinity.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

FEATURE_PREFIX = "feature_"
SPLITS = ("train", "val", "test")

# column -> pandas dtype kind ("O"/"T" string-like, "i" integer, "f" float)
EXAMPLES = {"task": "str", "split": "str", "label": "float"}
TASKS = {
    "task": "str",
    "task_index": "int",
    "task_type": "str",
    "n_train": "int",
    "n_val": "int",
    "n_test": "int",
    "planted_group": "int",
}
SUBSETS = {"subset_id": "int", "task": "str", "design": "str"}
RUN_DECISIONS = {"item": "str", "value": "str"}
PAIR_COUNTS = {"task_i": "str", "task_j": "str", "n_subsets": "int"}
SUBSET_VALUES = {
    "subset_id": "int",
    "task": "str",
    "split": "str",
    "loss": "float",
    "metric": "float",
    "estimator": "str",
    "design": "str",
}
FORWARD_SELECTION = {
    "target": "str",
    "step": "int",
    "added": "str",
    "size": "int",
    "subset_id": "int",
    "loss": "float",
}
FORWARD_COMPARISON = {
    "target": "str",
    "n_surrogate": "int",
    "n_forward": "int",
    "n_both": "int",
    "jaccard": "float",
    "top_jaccard": "float",
    "alone_loss": "float",
    "forward_loss": "float",
    "predicted_surrogate": "float",
    "predicted_forward": "float",
}
AFFINITY = {
    "task_i": "str",
    "task_j": "str",
    "n_subsets": "int",
    "raw": "float",
    "normalized": "float",
}
Z_PREFIX = "z_"
PROJECTED = {"task": "str", "split": "str", "label": "float", "base_output": "float"}
PROJECTION = {
    "structure": "str",
    "kind": "str",
    "seed": "int",
    "dim": "int",
    "nonzeros": "int",
    "preconditioner": "str",
    "projected_dim": "int",
    "n_parameters": "int",
    "theta_norm": "float",
}
GROUPING = {"task": "str", "group": "int"}
GROUP_RESULTS = {
    "variant": "str",
    "group_key": "str",
    "seed": "int",
    "task": "str",
    "split": "str",
    "loss": "float",
    "metric": "float",
    "loss_weight": "float",
    "n_examples": "int",
    "diverged": "bool",
}
# The per-task evaluation table (taskgroup.report.evaluation.per_task_table): the columns
# the recommendation reads.
PER_TASK = {
    "grouping": "str",
    "variant": "str",
    "seed": "int",
    "task": "str",
    "cluster": "int",
    "group_key": "str",
    "test_metric": "float",
    "val_select_loss": "float",
    "val_select_metric": "float",
    "val_select_n": "int",
}
RECOMMENDATION_GROUPS = {"task": "str", "group": "int", "group_key": "str"}
RECOMMENDATION_VERDICT = {
    "candidate": "str",
    "kind": "str",
    "n_groups": "int",
    "n_seeds": "int",
    "selection_score": "float",
    "selection_sd": "float",
    "difference": "float",
    "difference_sd": "float",
    "task_difference": "float",
    "task_p": "float",
    # the level task_p was compared with: Holm's over the distinct partitions with more
    # groups than naive MTL (0 once one failed; NaN for naive MTL and smaller candidates)
    "task_level": "float",
    # candidates with the same number split the tasks the same way (the same models)
    "partition": "int",
    "median_selection_metric": "float",
    "mean_test_metric": "float",
    "sd_test_metric": "float",
    "median_test_metric": "float",
    "beats_reference": "bool",
    "eligible": "bool",
    "chosen": "bool",
    "statistic": "str",
}
RECOMMENDATION_PER_TASK_CHOICE = {
    "task": "str",
    "choice": "str",
    "selection_score": "float",
    "answer_selection_score": "float",
    "test_metric": "float",
    "answer_test_metric": "float",
}
RECOMMENDATION_SIGNAL = {
    "n_subsets_per_half": "int",
    "n_pairs": "int",
    "correlation": "float",
    "p_value": "float",
    "ari": "float",
    "held_out_count": "int",
    "held_out_score": "float",
    "n_clusters": "int",
    "bootstrap_draws": "int",
    "bootstrap_ari_mean": "float",
    "bootstrap_ari_sd": "float",
    "noise_floor_tasks": "int",
    "noise_floor_spearman": "float",
    "estimator_spearman": "float",
    "noise_floor_p_value": "float",
    "alpha": "float",
    "split_half_noise": "bool",
    "partition_noise": "bool",
    "noise_floor_noise": "bool",
    "above_noise": "bool",
}
# The per-(subset, task) table of the estimator validation (taskgroup.stages.validate): the
# columns the recommendation's noise floor reads.
VALIDATION_PER_SUBSET = {
    "estimator": "str",
    "subset_id": "int",
    "task": "str",
    "loss": "float",
    "loss_reference": "float",
}
# The l2 choice of the gradient estimate (taskgroup.stages.validate.calibrate_estimate);
# with gradient_estimate.task_scales "auto" each l2's median_rel_error is after its own task
# scales.
L2_CURVE = {
    "l2": "float",
    "n_subsets": "int",
    "median_rel_error": "float",
    "within_task_pearson": "float",
    "within_task_pearson_se": "float",
    "within_task_spearman": "float",
    "chosen": "bool",
}
# The estimate's per-task scales (taskgroup.estimate.task_scales.fit_task_scales, written
# by calibrate_estimate at the chosen l2 when gradient_estimate.task_scales is "auto"): the
# applied scale and offset (a loss), the task's own within-task least-squares slope on the
# held-out subsets (NaN below 3), its pooling weight, the held-out subsets holding the task,
# and the within-task slope of all tasks.
TASK_SCALES = {
    "task": "str",
    "scale": "float",
    "offset": "float",
    "own_scale": "float",
    "weight": "float",
    "n_subsets": "int",
    "pooled_scale": "float",
}
# The fine-tuning rate's choice (taskgroup.stages.validate.calibrate_finetune): per
# candidate rate, how well two real fine-tunings of the held-out subsets with different
# seeds agree (noise_floor: median over tasks of the within-task Spearman correlation of
# their values; noise_floor_se its standard error), how far fine-tuning moves the values
# from the meta-initialization's (median |f - f_meta| / f_meta) and the share it raises.
LR_CURVE = {
    "lr": "float",
    "n_subsets": "int",
    "noise_floor": "float",
    "noise_floor_se": "float",
    "median_rel_change": "float",
    "share_raised": "float",
    "chosen": "bool",
}
# The count scan of clustering.n_clusters "auto" (taskgroup.group.clustering.choose_n_clusters),
# one row per (method, candidate count) of a source.
CLUSTER_SCAN = {
    "source": "str",
    "method": "str",
    "n_clusters": "int",
    "criterion": "str",
    "score": "float",
    "score_se": "float",
    "chosen": "bool",
}

TASK_WEIGHTS = {
    "task": "str",
    "weight": "float",
    "alpha": "float",
    "theta_norm": "float",
    "rank": "int",
    "component": "int",
    "singular_value": "float",
}
DIAGNOSTICS = {
    "epoch": "int",
    "phase": "str",
    "task": "str",
    "split": "str",
    "loss": "float",
    "grad_cosine": "float",
    "grad_norm": "float",
}
# The diagnostics of the group models: one DIAGNOSTICS table per model, keyed.
GROUP_DIAGNOSTICS = {"variant": "str", "group_key": "str", "seed": "int", **DIAGNOSTICS}
GENERALIZATION_GAP = {
    "variant": "str",
    "group_key": "str",
    "n_tasks": "int",
    "seed": "int",
    "task": "str",
    "mtl_epoch": "int",
    "mtl_train_loss": "float",
    "mtl_val_loss": "float",
    "stl_epoch": "int",
    "stl_train_loss": "float",
    "stl_val_loss": "float",
    "gap": "float",
    "final_difference": "float",
}


def tasks_table(
    tasks: Sequence[str],
    task_types: str | Sequence[str],
    counts: Sequence[Sequence[int]] | np.ndarray,
    planted_groups: Sequence[int] | None = None,
) -> pd.DataFrame:
    """The tasks table (schema :data:`TASKS`) of ``tasks``, in the given (canonical) order.

    tasks: the k task names; task_types: one type for every task or one per task;
    counts: (k, 3) the examples of every task in train, val, test (the order of SPLITS);
    planted_groups: k group ids, or None when the dataset has no planted groups (null).
    task_index is 0..k-1; the integer columns are int64, planted_group Int64.
    """
    k = len(tasks)
    counts = np.asarray(counts, dtype=np.int64).reshape(k, len(SPLITS))
    groups = [pd.NA] * k if planted_groups is None else list(planted_groups)
    table = pd.DataFrame({"task": list(tasks), "task_index": np.arange(k, dtype=np.int64)})
    table["task_type"] = task_types if isinstance(task_types, str) else list(task_types)
    for column, split in enumerate(SPLITS):
        table[f"n_{split}"] = counts[:, column]
    table["planted_group"] = pd.array(groups, dtype="Int64")
    return table


def _kind_matches(series: pd.Series, kind: str) -> bool:
    if kind == "str":
        return pd.api.types.is_string_dtype(series) or pd.api.types.is_object_dtype(series)
    if kind == "int":
        return pd.api.types.is_integer_dtype(series)
    if kind == "bool":
        return pd.api.types.is_bool_dtype(series)
    if kind == "float":
        return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    raise ValueError(f"unknown column kind {kind!r}")


def check_columns(frame: pd.DataFrame, schema: dict[str, str], source: str) -> None:
    """Raise ValueError naming ``source`` if a column of ``schema`` is missing or mistyped."""
    missing = [column for column in schema if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; expected columns {list(schema)}, "
            f"found {list(frame.columns)}"
        )
    for column, kind in schema.items():
        if not _kind_matches(frame[column], kind):
            raise ValueError(
                f"{source}: column {column!r} has dtype {frame[column].dtype}, expected {kind}"
            )


PARQUET_MAGIC = b"PAR1"  # the first and the last four bytes of every Parquet file


class UnreadableFileError(ValueError):
    """A file the workflow wrote (a table, a model) that cannot be read: damaged, cut short
    or replaced; the message names the path and how to make the workflow write it again."""


def regenerate_hint(path: str | os.PathLike) -> str:
    """How to make Snakemake write the workflow's file at ``path`` again: a plain rerun
    does not, since the file exists and its inputs did not change."""
    return (
        f"the workflow wrote it: regenerate it with `snakemake --forcerun {path}` (the job "
        "that writes it, and those that read it, run again)"
    )


def parquet_damage(path: str | os.PathLike, error: Exception) -> str:
    """What is wrong with the Parquet file at ``path`` that pyarrow failed to read with
    ``error``: empty, not Parquet (with its first line when it is text), cut short, or
    pyarrow's own message."""
    size = Path(path).stat().st_size
    with open(path, "rb") as handle:
        start = handle.read(64)
        handle.seek(max(size - len(PARQUET_MAGIC), 0))
        end = handle.read()
    if size == 0:
        return "the file is empty (0 bytes)"
    if not start.startswith(PARQUET_MAGIC):
        lines = start.decode("utf-8", errors="replace").splitlines()
        text = f"; it starts like text: {lines[0][:40]!r}" if lines and start.isascii() else ""
        return f"it does not start with the bytes PAR1 that every Parquet file starts with{text}"
    if end != PARQUET_MAGIC:
        return (
            f"it is cut short ({size} bytes, no PAR1 at its end: an interrupted write or "
            "copy?)"
        )
    return f"pyarrow: {error}"


def read_table(path: str | os.PathLike, schema: dict[str, str]) -> pd.DataFrame:
    """Read a Parquet artifact and check it against ``schema`` (see module docstring).

    Raises FileNotFoundError if it is missing, :class:`UnreadableFileError` naming the path
    and the ``snakemake --forcerun`` that rewrites it if it is not a readable Parquet file,
    ValueError (:func:`check_columns`) if its columns do not match."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow's ArrowInvalid, OSError
        raise UnreadableFileError(
            f"{path}: not a readable Parquet file ({parquet_damage(path, error)}); "
            + regenerate_hint(path)
        ) from None
    check_columns(frame, schema, str(path))
    return frame


def write_atomically(path: str | os.PathLike, write) -> None:
    """Call ``write(partial_path)`` and rename the result to ``path``: a crash never leaves a
    partial file at ``path``, and a failed write leaves nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()


def write_table(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``frame`` to Parquet atomically (see :func:`write_atomically`)."""
    write_atomically(path, lambda partial: frame.to_parquet(partial, index=False))


def chosen_candidate(path: str | os.PathLike, schema: dict[str, str], column: str) -> float:
    """The ``column`` value of the one row marked ``chosen`` of the curve table at ``path``
    (read with ``schema``: an l2 or lr curve). Raises ValueError when not exactly one row
    is chosen."""
    curve = read_table(path, schema)
    chosen = curve.loc[curve["chosen"], column]
    if len(chosen) != 1:
        raise ValueError(f"{path}: {len(chosen)} rows have chosen == True; expected exactly one")
    return float(chosen.iloc[0])


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The feature columns of an examples table, in their stored order."""
    return [column for column in frame.columns if column.startswith(FEATURE_PREFIX)]
