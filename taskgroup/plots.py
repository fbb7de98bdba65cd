"""Figures of the workflow's report (PNG, matplotlib without a display)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def affinity_heatmap(matrix: np.ndarray, names: list[str], clusters: np.ndarray, path) -> None:
    """Heatmap of a (k, k) affinity with tasks sorted by cluster, cluster borders drawn."""
    order = np.argsort(clusters, kind="stable")
    shown = matrix[np.ix_(order, order)]
    size = max(5.0, 0.22 * len(names))
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    limit = np.nanmax(np.abs(shown)) if np.isfinite(shown).any() else 1.0
    image = axes.imshow(shown, cmap="RdBu", vmin=-limit, vmax=limit)
    boundaries = np.flatnonzero(np.diff(clusters[order])) + 0.5
    for boundary in boundaries:
        axes.axhline(boundary, color="black", linewidth=1)
        axes.axvline(boundary, color="black", linewidth=1)
    labels = [names[i] for i in order]
    axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    axes.set_yticks(range(len(labels)), labels, fontsize=6)
    axes.set_xlabel("task j")
    axes.set_ylabel("target task i")
    axes.set_title("Normalized higher-order affinity, ordered by cluster")
    figure.colorbar(image, ax=axes, label="affinity (higher = train together)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def per_task_metric(per_task: pd.DataFrame, path) -> None:
    """Test metric of every task under each grouping, tasks in their canonical order."""
    wide = per_task.pivot(index="task", columns="grouping", values="test_metric").sort_index()
    figure, axes = plt.subplots(figsize=(max(6.0, 0.25 * len(wide)), 4))
    for grouping in wide.columns:
        axes.plot(range(len(wide)), wide[grouping], marker="o", linewidth=1, label=
                  f"{grouping} (mean {wide[grouping].mean():.3f})")
    axes.set_xticks(range(len(wide)), wide.index, rotation=90, fontsize=6)
    axes.set_ylabel("test metric (evaluation.metric; higher is better)")
    axes.set_title("Per-task test metric by grouping")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def estimator_validation(per_subset: pd.DataFrame, curve: pd.DataFrame, path) -> None:
    """Left: estimated against real validation losses (gradient estimate, a second real
    fine-tuning, no change). Right: the first-order validity curve."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, rows in per_subset.groupby("estimator"):
        left.scatter(rows["loss_reference"], rows["loss"], s=10, alpha=0.7,
                     label=f"{name} (median error {rows['relative_error'].median():.3f})")
    low = per_subset[["loss", "loss_reference"]].min().min()
    high = per_subset[["loss", "loss_reference"]].max().max()
    left.plot([low, high], [low, high], color="black", linewidth=0.8)
    left.set_xlabel("real fine-tuning: validation loss f_i(S)")
    left.set_ylabel("other estimate of f_i(S)")
    left.set_title("Estimated against real subset values")
    left.legend(fontsize=7)
    summary = curve.groupby("scale").agg(
        shift=("relative_shift", "median"), error=("relative_error", "median")
    )
    right.plot(summary["shift"], summary["error"], marker="o")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("||c Delta|| / ||theta*|| (median over subsets)")
    right.set_ylabel("median relative error of the first-order loss")
    right.set_title("First-order validity along real fine-tuning")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
