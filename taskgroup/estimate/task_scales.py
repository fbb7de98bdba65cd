"""Per-task calibration of the estimated changes (a scale and an offset), fitted on the
held-out real fine-tunings.

The estimate's change of task t's validation loss, x = f_t(S) - f_t(meta), ranks the
subsets well, but its size is off by a factor of the task's own, and it misses a part of
the real change that is the same in every subset holding t. The estimate moves every task
for the same time in one fixed metric, while real fine-tuning steps with Adam, whose steps
are normalized coordinate by coordinate (so tasks of small gradients move relatively
further), and trains the task's own examples for a fixed number of epochs whatever the
other members are. The held-out subsets are fine-tuned for real anyway (to choose l2), so
each task's line y = offset_t + scale_t x is fitted there, y the real change:

- scale_t: the task's least-squares slope s_t of y on x, within the task (both centered
  on their means over the held-out subsets holding t), partially pooled toward the
  within-task slope of all tasks together, s = sum_t Sxy_t / sum_t Sxx_t, by the method of
  moments of a random-effects model:

      w_t = tau^2 / (tau^2 + v_t),   scale_t = s + w_t (s_t - s),

  with v_t the sampling variance of s_t (its residual variance over Sxx_t, n_t - 2
  degrees of freedom) and tau^2 the variance of the s_t across tasks less their mean
  sampling variance (at least 0): a task seen in few subsets, or in noisy ones, keeps
  little of its own slope. Scales below a tenth of s are raised to it (a task whose
  estimate points the wrong way keeps its direction, shrunk).
- offset_t = mean(y) - scale_t mean(x) over the task's held-out subsets: the line passes
  through the task's mean (its calibration in the large); 0 for a task in none.

A positive scale and a per-task offset change no task's ranking of the subsets (a
difference between two subsets holding the task is multiplied by the scale, so its sign is
kept), so the correlations, the normalized affinities and the comparisons of subsets by
one task's value are those of the uncalibrated estimate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# The floor of a task's scale, as a share of the pooled one (see the module docstring).
SMALLEST_SHARE = 0.1

# A task's own slope needs a residual variance: n - 2 degrees of freedom after its mean
# and slope.
SMALLEST_OWN_FIT = 3


def fit_task_scales(
    estimate: pd.DataFrame, reference: pd.DataFrame, base_loss: pd.Series,
    task_names: list[str],
) -> pd.DataFrame:
    """The task scales table (schema TASK_SCALES of :mod:`taskgroup.data.tables`): one row
    per task of ``task_names`` with its applied ``scale`` and ``offset`` (a loss), its own
    within-task least-squares slope ``own_scale`` (NaN when it is in fewer than 3 subsets,
    or its estimated changes do not vary), the pooling ``weight`` of that slope, its
    ``n_subsets`` and the ``pooled_scale`` of all tasks, from the subset values
    ``estimate`` and ``reference`` (columns subset_id, task, loss) of the same subsets and
    ``base_loss`` (task -> the meta-initialization's validation loss). A task without an
    own slope gets the pooled scale. Raises ValueError when the two tables share no
    (subset, task) pair, or the estimated changes do not vary within any task or vary,
    overall, against the real ones (no positive pooled scale)."""
    merged = estimate[["subset_id", "task", "loss"]].merge(
        reference[["subset_id", "task", "loss"]], on=["subset_id", "task"],
        suffixes=("_estimate", "_reference"), validate="one_to_one",
    )
    if merged.empty:
        raise ValueError("task scales: the estimate and the reference share no subset")
    base = base_loss.loc[merged["task"]].to_numpy()
    merged["x"] = merged["loss_estimate"].to_numpy() - base
    merged["y"] = merged["loss_reference"].to_numpy() - base
    rows = []
    for task in task_names:
        part = merged[merged["task"] == task]
        x, y = part["x"].to_numpy(), part["y"].to_numpy()
        mean_x = float(x.mean()) if len(x) else 0.0
        mean_y = float(y.mean()) if len(y) else 0.0
        dx, dy = x - mean_x, y - mean_y
        squares, products = float(dx @ dx), float(dx @ dy)
        own = variance = float("nan")
        if squares > 0 and len(x) >= SMALLEST_OWN_FIT:
            own = products / squares
            residual = dy - own * dx
            variance = float(residual @ residual) / (len(x) - 2) / squares
        rows.append({"task": task, "own_scale": own, "variance": variance,
                     "n_subsets": len(part), "mean_x": mean_x, "mean_y": mean_y,
                     "squares": squares, "products": products})
    table = pd.DataFrame(rows)
    pooled_denominator = float(table["squares"].sum())
    pooled = float(table["products"].sum()) / pooled_denominator if (
        pooled_denominator > 0) else float("nan")
    if not pooled > 0:
        raise ValueError(
            f"task scales: the pooled within-task slope of the real changes on the "
            f"estimated ones is {pooled:.3g}; expected a positive one (the estimate does "
            "not vary within any task, or varies against real fine-tuning); set "
            "gradient_estimate.task_scales to none"
        )
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
    offset = table["mean_y"].to_numpy() - scale * table["mean_x"].to_numpy()
    return pd.DataFrame({
        "task": table["task"], "scale": scale, "offset": offset,
        "own_scale": table["own_scale"], "weight": weight,
        "n_subsets": table["n_subsets"].astype(np.int64), "pooled_scale": pooled,
    })


def scale_changes(values: pd.DataFrame, scales: pd.DataFrame, base_loss: pd.Series
                  ) -> pd.DataFrame:
    """``values`` (a subset_values table) with every loss moved to base + offset + scale
    (loss - base), per task (``scales``: a task scales table as :func:`fit_task_scales`
    gives it, columns task, scale and offset at least; ``base_loss``: task -> loss). The
    metric column is left as it is (the calibration is of the loss change only). Raises
    ValueError naming the tasks that ``scales`` lacks."""
    lines = scales.set_index("task")
    missing = sorted(set(values["task"]) - set(lines.index))
    if missing:
        raise ValueError(f"task scales: no scale for the tasks {missing}")
    scaled = values.copy()
    tasks = scaled["task"]
    base = base_loss.loc[tasks].to_numpy()
    scaled["loss"] = (base + lines["offset"].loc[tasks].to_numpy()
                      + lines["scale"].loc[tasks].to_numpy() * (scaled["loss"].to_numpy() - base))
    return scaled
