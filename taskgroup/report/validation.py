"""How close one set of subset values is to another (an estimate against real fine-tuning).

A relative error alone says little: fine-tuning moves losses by a few percent, so predicting
no change already scores a few percent, and two real fine-tunings with different seeds
disagree too. So every figure here is meant to be read next to the same figure for the
trivial estimate and for a second real fine-tuning (the noise floor).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from taskgroup.group.affinity import affinity_table, square
from taskgroup.group.clustering import Clustering, ClusteringSettings, cluster, partition
from taskgroup.group.groupings import adjusted_rand_index


def per_task_relative_error(estimate: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """|f_est - f_ref| / f_ref for every (subset_id, task) of ``estimate`` (validation loss)."""
    merged = estimate.merge(
        reference[["subset_id", "task", "loss"]], on=["subset_id", "task"],
        suffixes=("", "_reference"), validate="one_to_one",
    )
    merged["relative_error"] = (merged["loss"] - merged["loss_reference"]).abs() / merged[
        "loss_reference"
    ]
    return merged[["subset_id", "task", "loss", "loss_reference", "relative_error"]]


def within_task_spearman(
    estimate: pd.DataFrame, reference: pd.DataFrame, base_loss: pd.Series
) -> pd.Series:
    """Per task, the Spearman correlation across subsets of the predicted change
    f_est - f_meta against the reference change f_ref - f_meta (NaN below 3 subsets)."""
    merged = per_task_relative_error(estimate, reference)
    merged["meta"] = base_loss.loc[merged["task"]].to_numpy()
    result = {}
    for task, rows in merged.groupby("task"):
        if len(rows) < 3:
            result[task] = float("nan")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant input gives NaN, which is the answer
            result[task] = spearmanr(
                rows["loss"] - rows["meta"], rows["loss_reference"] - rows["meta"]
            ).statistic
    return pd.Series(result, name="spearman")


def within_task_pearson(estimate: pd.DataFrame, reference: pd.DataFrame) -> pd.Series:
    """Per task, the Pearson correlation across subsets of f_est against f_ref (NaN below
    3 subsets or for constant values). The normalized affinity z-scores each task's values
    over its subsets, so it depends on an estimate only through these correlations."""
    merged = per_task_relative_error(estimate, reference)
    result = {}
    for task, rows in merged.groupby("task"):
        mine, theirs = rows["loss"].to_numpy(), rows["loss_reference"].to_numpy()
        if len(rows) < 3 or np.ptp(mine) == 0 or np.ptp(theirs) == 0:
            result[task] = float("nan")
            continue
        result[task] = float(np.corrcoef(mine, theirs)[0, 1])
    return pd.Series(result, name="pearson")


def median_standard_error(values) -> float:
    """The large-sample standard error of the median of ``values`` (NaN ignored):
    sqrt(pi / 2) sd / sqrt(n); NaN below 2 values."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return float("nan")
    return float(np.sqrt(np.pi / 2) * values.std(ddof=1) / np.sqrt(len(values)))


def tied_with_best(curve: pd.DataFrame, column: str) -> pd.DataFrame:
    """The rows of ``curve`` whose ``column`` is within one standard error (the best row's
    ``<column>_se``; 0 when it is NaN) of the highest ``column``: the candidates a curve
    cannot tell apart from its best. ``column`` must not be all NaN."""
    best = curve.loc[curve[column].idxmax()]
    margin = best[f"{column}_se"]
    margin = 0.0 if np.isnan(margin) else margin
    return curve[curve[column] >= best[column] - margin]


def l2_curve(estimates: dict[float, pd.DataFrame], reference: pd.DataFrame,
             base_loss: pd.Series, chosen: float | None = None) -> pd.DataFrame:
    """The l2 curve table (see :mod:`taskgroup.data.tables`) of ``estimates`` (l2 -> the
    estimate's subset values at that l2) against ``reference`` on the same subsets.

    ``chosen`` None: the chosen l2 is, among the candidates whose median within-task
    Pearson correlation is within one standard error (of the best one's median, over
    tasks) of the highest, the one of lowest median relative error. The correlation is
    the agreement the normalized affinity depends on; where it cannot tell candidates
    apart, the level of the values decides (the surrogates and the pairwise transfer read
    the values themselves). Otherwise ``chosen`` (a key of ``estimates``) is marked.
    Raises ValueError when ``estimates`` is empty, when ``chosen`` is not one of its keys,
    or when no l2 has a defined correlation (every task in fewer than 3 subsets).
    """
    if not estimates:
        raise ValueError("l2 curve: no candidate l2 values")
    rows = []
    for l2 in sorted(estimates):
        values = estimates[l2]
        errors = per_task_relative_error(values, reference)["relative_error"]
        pearson = within_task_pearson(values, reference)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # all-NaN medians are the answer
            rows.append({
                "l2": float(l2),
                "n_subsets": int(values["subset_id"].nunique()),
                "median_rel_error": float(errors.median()),
                "within_task_pearson": float(np.nanmedian(pearson)),
                "within_task_pearson_se": median_standard_error(pearson),
                "within_task_spearman": float(
                    np.nanmedian(within_task_spearman(values, reference, base_loss))
                ),
            })
    curve = pd.DataFrame(rows)
    if chosen is None:
        if curve["within_task_pearson"].isna().all():
            raise ValueError(
                "l2 curve: no task is in 3 or more held-out subsets, so no l2 can be chosen; "
                "raise validation.n_subsets or set gradient_estimate.l2 to a number"
            )
        tied = tied_with_best(curve, "within_task_pearson")
        chosen = float(tied.loc[tied["median_rel_error"].idxmin(), "l2"])
    elif float(chosen) not in set(curve["l2"]):
        raise ValueError(f"l2 curve: the chosen l2 {chosen!r} is not a candidate")
    curve["chosen"] = curve["l2"] == float(chosen)
    return curve


def lr_curve(pairs: dict[float, tuple[pd.DataFrame, pd.DataFrame]], base_loss: pd.Series,
             chosen: float | None = None) -> pd.DataFrame:
    """The lr curve table (see :mod:`taskgroup.data.tables`) of ``pairs`` (learning rate ->
    the subset values of two real fine-tunings of the same subsets with different seeds);
    ``base_loss``: the meta-initialization's validation loss per task.

    ``chosen`` None: the chosen rate is the largest whose noise floor (the median over
    tasks of the within-task Spearman correlation between the two fine-tunings) is within
    one standard error (of the best one's median) of the highest floor. A value two
    fine-tunings of one subset do not agree on cannot be estimated or grouped on, so the
    floor comes first; among rates it cannot tell apart, the largest moves the values
    most, so its differences between subsets stand furthest above rounding and the
    meta-initialization's own fit. Otherwise ``chosen`` (a key of ``pairs``) is marked.
    Raises ValueError when ``pairs`` is empty, when ``chosen`` is not one of its keys, or
    when no rate has a defined floor (every task in fewer than 3 subsets).
    """
    if not pairs:
        raise ValueError("lr curve: no candidate learning rates")
    rows = []
    for lr in sorted(pairs):
        first, second = pairs[lr]
        floor = within_task_spearman(first, second, base_loss)
        meta = base_loss.loc[first["task"]].to_numpy()
        change = (first["loss"].to_numpy() - meta) / meta
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # all-NaN medians are the answer
            rows.append({
                "lr": float(lr),
                "n_subsets": int(first["subset_id"].nunique()),
                "noise_floor": float(np.nanmedian(floor)),
                "noise_floor_se": median_standard_error(floor),
                "median_rel_change": float(np.median(np.abs(change))),
                "share_raised": float(np.mean(change > 0)),
            })
    curve = pd.DataFrame(rows)
    if chosen is None:
        if curve["noise_floor"].isna().all():
            raise ValueError(
                "lr curve: no task is in 3 or more held-out subsets, so no learning rate can "
                "be chosen; raise validation.n_subsets or set finetune.lr to a number"
            )
        chosen = float(tied_with_best(curve, "noise_floor")["lr"].max())
    elif float(chosen) not in set(curve["lr"]):
        raise ValueError(f"lr curve: the chosen lr {chosen!r} is not a candidate")
    curve["chosen"] = curve["lr"] == float(chosen)
    return curve


def affinity_distance(estimate, reference, task_names, column: str) -> float:
    """||T_est - T_ref||_F / ||T_ref||_F over the pairs covered in both (NaN pairs as 0)."""
    mine = np.nan_to_num(square(affinity_table(estimate, task_names), task_names, column))
    theirs = np.nan_to_num(square(affinity_table(reference, task_names), task_names, column))
    return float(np.linalg.norm(mine - theirs) / np.linalg.norm(theirs))


def reference_clusters(reference: pd.DataFrame, task_names: list[str],
                       clustering: ClusteringSettings, method: str) -> Clustering:
    """The clusters of ``reference``'s normalized higher-order affinity by ``method`` under
    ``clustering``: what :func:`agreement` compares every estimate's clusters with."""
    theirs = square(affinity_table(reference, task_names), task_names, "normalized")
    return cluster(theirs, method, clustering)


def agreement(
    estimate: pd.DataFrame, reference: pd.DataFrame, base_loss: pd.Series,
    task_names: list[str], clustering: ClusteringSettings, method: str,
    clusters_of_reference: Clustering | None = None,
) -> dict[str, float]:
    """The summary figures of ``estimate`` against ``reference`` on the same subsets:
    median relative error, median within-task Spearman, raw and normalized affinity
    distances, and the ARI between the clusters of the two normalized affinities, both
    clustered by ``method`` into the same number of clusters (for n_clusters "auto": the
    count chosen on the reference). ``clusters_of_reference``: :func:`reference_clusters`
    (computed here when None; pass them to compare several estimates with one reference,
    as an SDP at k = 500 takes minutes)."""
    errors = per_task_relative_error(estimate, reference)
    mine = square(affinity_table(estimate, task_names), task_names, "normalized")
    if clusters_of_reference is None:
        clusters_of_reference = reference_clusters(reference, task_names, clustering, method)
    labels = [
        partition(mine, method, replace(clustering, n_clusters=clusters_of_reference.n_clusters)),
        clusters_of_reference.labels,
    ]
    return {
        "median_rel_error": float(errors["relative_error"].median()),
        "within_task_spearman": float(
            np.nanmedian(within_task_spearman(estimate, reference, base_loss))
        ),
        "affinity_dist_raw": affinity_distance(estimate, reference, task_names, "raw"),
        "affinity_dist_normalized": affinity_distance(
            estimate, reference, task_names, "normalized"
        ),
        "ari_clusters": float(adjusted_rand_index(labels[0], labels[1])),
    }
