"""Per-task scales of the estimated changes, fitted on the held-out real fine-tunings.

The estimate's change of task t's validation loss, f_t(S) - f_t(meta), ranks the subsets
well, but its size is off by a factor of the task's own: the estimate moves every task for
the same time in one fixed metric, while real fine-tuning steps with Adam, whose steps are
normalized coordinate by coordinate and so move tasks of small gradients relatively
further. The held-out subsets are fine-tuned for real anyway (to choose l2), so each task's
factor is fitted there: the least-squares slope s_t of the real changes on the estimated
ones over the held-out subsets holding t, partially pooled toward the slope of all tasks
together, s = sum(x y) / sum(x^2), by the method of moments of a random-effects model:

    w_t = tau^2 / (tau^2 + v_t),   scale_t = s + w_t (s_t - s),

with v_t the sampling variance of s_t (its residual variance over sum_t(x^2)) and tau^2
the variance of the s_t across tasks less their mean sampling variance (at least 0): a
task seen in few subsets, or in noisy ones, keeps little of its own slope. A positive
scale changes no task's ranking of the subsets, so the correlations and the normalized
affinities are those of the unscaled estimate; scales below a tenth of s are raised to it
(a task whose estimate points the wrong way keeps its direction, shrunk).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# The floor of a task's scale, as a share of the pooled one (see the module docstring).
SMALLEST_SHARE = 0.1


def fit_task_scales(
    estimate: pd.DataFrame, reference: pd.DataFrame, base_loss: pd.Series,
    task_names: list[str],
) -> pd.DataFrame:
    """The task scales table (schema TASK_SCALES of :mod:`taskgroup.data.tables`): one row
    per task of ``task_names`` with its applied ``scale``, its own least-squares slope
    ``own_scale`` (NaN when it is in fewer than 2 subsets, or its estimated changes are all
    0), the
    pooling ``weight`` of that slope, its ``n_subsets`` and the ``pooled_scale`` of all
    tasks, from the subset values ``estimate`` and ``reference`` (columns subset_id, task,
    loss) of the same subsets and ``base_loss`` (task -> the meta-initialization's
    validation loss). A task without an own slope gets the pooled scale. Raises ValueError when
    the two tables share no (subset, task) pair or the estimated changes are all 0 or
    point, overall, against the real ones (no positive pooled scale)."""
    merged = estimate[["subset_id", "task", "loss"]].merge(
        reference[["subset_id", "task", "loss"]], on=["subset_id", "task"],
        suffixes=("_estimate", "_reference"), validate="one_to_one",
    )
    if merged.empty:
        raise ValueError("task scales: the estimate and the reference share no subset")
    base = base_loss.loc[merged["task"]].to_numpy()
    merged["x"] = merged["loss_estimate"].to_numpy() - base
    merged["y"] = merged["loss_reference"].to_numpy() - base
    pooled_denominator = float((merged["x"] ** 2).sum())
    pooled = float((merged["x"] * merged["y"]).sum()) / pooled_denominator if (
        pooled_denominator > 0) else float("nan")
    if not pooled > 0:
        raise ValueError(
            f"task scales: the pooled slope of the real changes on the estimated ones is "
            f"{pooled:.3g}; expected a positive one (the estimate moves no task, or against "
            "real fine-tuning); set gradient_estimate.task_scales to none"
        )
    rows = []
    for task in task_names:
        part = merged[merged["task"] == task]
        x, y = part["x"].to_numpy(), part["y"].to_numpy()
        squares = float((x**2).sum())
        own = variance = float("nan")
        # a slope through the origin of n points has n - 1 degrees of freedom left for
        # its variance: none below 2 points
        if squares > 0 and len(x) >= 2:
            own = float((x * y).sum()) / squares
            residual = y - own * x
            variance = float((residual**2).sum()) / (len(x) - 1) / squares
        rows.append({"task": task, "own_scale": own, "variance": variance,
                     "n_subsets": len(part)})
    table = pd.DataFrame(rows)
    known = table["own_scale"].notna()
    spread = float(table.loc[known, "own_scale"].var()) if known.sum() > 1 else 0.0
    between = max(0.0, spread - float(table.loc[known, "variance"].mean())) if (
        known.sum() > 1) else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = np.where(known, between / (between + table["variance"]), 0.0)
    # between = variance = 0 (every own slope equal and exact): all of it is the task's
    weight = np.nan_to_num(weight, nan=1.0)
    own = table["own_scale"].fillna(pooled).to_numpy()
    scale = np.maximum(pooled + weight * (own - pooled), SMALLEST_SHARE * pooled)
    return pd.DataFrame({
        "task": table["task"], "scale": scale, "own_scale": table["own_scale"],
        "weight": weight, "n_subsets": table["n_subsets"].astype(np.int64),
        "pooled_scale": pooled,
    })


def scale_changes(values: pd.DataFrame, scales: pd.Series, base_loss: pd.Series
                  ) -> pd.DataFrame:
    """``values`` (a subset_values table) with every loss moved to base + scale (loss -
    base), per task (``scales``, ``base_loss``: task -> value). The metric column is left
    as it is (the scale is of the loss change only). Raises ValueError naming the tasks
    that ``scales`` lacks."""
    missing = sorted(set(values["task"]) - set(scales.index))
    if missing:
        raise ValueError(f"task scales: no scale for the tasks {missing}")
    scaled = values.copy()
    base = base_loss.loc[scaled["task"]].to_numpy()
    scaled["loss"] = base + scales.loc[scaled["task"]].to_numpy() * (
        scaled["loss"].to_numpy() - base
    )
    return scaled
