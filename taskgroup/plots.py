"""Figures of the workflow's report (PNG, matplotlib without a display)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def affinity_heatmap(
    matrix: np.ndarray, names: list[str], clusters: np.ndarray, path, title: str
) -> None:
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
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="affinity (higher = train together)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def gain_over_reference(per_task: pd.DataFrame, path, reference: str = "naive_mtl") -> None:
    """Per-task gain in test metric of each grouping over ``reference`` (both averaged over
    training seeds): one box per grouping, the mean as a diamond."""
    means = per_task.groupby(["grouping", "task"])["test_metric"].mean().unstack("grouping")
    gains = means.drop(columns=reference).sub(means[reference], axis=0)
    order = gains.mean().sort_values().index.tolist()
    figure, axes = plt.subplots(figsize=(7, max(3.0, 0.32 * len(order) + 1)))
    axes.boxplot([gains[name].dropna() for name in order], vert=False, widths=0.6)
    axes.scatter(gains[order].mean(), range(1, len(order) + 1), marker="D", color="C3",
                 zorder=3, label="mean over tasks")
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_yticks(range(1, len(order) + 1), order, fontsize=7)
    axes.set_xlabel(f"test metric minus {reference}'s, per task (mean over seeds)")
    axes.set_title(f"Per-task gain of each grouping over {reference}")
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def clustering_objective(objective: pd.DataFrame, path) -> None:
    """Average-density objective (left) and ARI against planted groups (right) of every
    clustering method on every affinity source."""
    sources = list(dict.fromkeys(objective["source"]))
    methods = list(dict.fromkeys(objective["method"]))
    width = 0.8 / len(methods)
    figure, panels = plt.subplots(1, 2, figsize=(11, 3.8))
    for panel, column, label in zip(
        panels, ("average_density", "ari_vs_planted"), ("average density", "ARI vs planted")
    ):
        for offset, method in enumerate(methods):
            rows = objective[objective["method"] == method].set_index("source")
            values = rows.reindex(sources)[column].to_numpy(dtype=float)
            panel.bar(np.arange(len(sources)) + offset * width, np.nan_to_num(values), width,
                      label=method)
        panel.set_xticks(np.arange(len(sources)) + width * (len(methods) - 1) / 2, sources,
                         rotation=20, fontsize=8)
        panel.set_ylabel(label)
    panels[0].set_title("Objective on each source's own affinity")
    panels[1].set_title("Agreement with planted groups (0 if unknown)")
    panels[1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def surrogate_coefficients(coefficients: pd.DataFrame, names: list[str], path) -> None:
    """Heatmap of the surrogate coefficients theta_ij (target i, source j; red = including j
    raises i's loss, i.e. negative transfer)."""
    matrix = (
        coefficients.pivot(index="target", columns="source", values="coefficient")
        .reindex(index=names, columns=names)
        .to_numpy(dtype=float)
    )
    size = max(5.0, 0.22 * len(names))
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    limit = np.nanmax(np.abs(matrix)) if np.isfinite(matrix).any() else 1.0
    image = axes.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    axes.set_yticks(range(len(names)), names, fontsize=6)
    axes.set_xlabel("source task j")
    axes.set_ylabel("target task i")
    axes.set_title("Linear surrogate coefficients of f_i(S)")
    figure.colorbar(image, ax=axes, label="change in validation loss when j joins (nats)")
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


def transfer_diagnostics(diagnostics: pd.DataFrame, path) -> None:
    """Transfer diagnostics of one run (a diagnostics table, :mod:`taskgroup.diagnostics`;
    several seeds are averaged): per-task training and validation loss (left, middle) and
    the cosine between each task's trunk gradient and the summed gradient on the training
    split (right), against the epoch. The kept model ("final") is left out; a dotted line
    marks the start of the alignment phase when there is one."""
    trajectory = diagnostics[diagnostics["phase"] != "final"]
    mean = trajectory.groupby(["task", "split", "epoch"], as_index=False)[
        ["loss", "grad_cosine"]
    ].mean()
    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = [("train", "loss", "training loss"), ("val", "loss", "validation loss"),
              ("train", "grad_cosine", "cos(g_i, sum_j g_j), trunk, training split")]
    aligned = trajectory.loc[trajectory["phase"] == "alignment", "epoch"]
    start = None if aligned.empty else trajectory.loc[
        trajectory["phase"] == "joint", "epoch"].max()
    for axis, (split, column, title) in zip(axes, panels):
        for task, rows in mean[mean["split"] == split].groupby("task"):
            axis.plot(rows["epoch"], rows[column], marker=".", linewidth=1, label=task)
        if start is not None:
            axis.axvline(start, color="grey", linestyle=":", linewidth=1)
        axis.set_xlabel("epoch")
        axis.set_title(title)
    axes[2].axhline(0.0, color="black", linewidth=0.6)
    if mean["task"].nunique() <= 12:
        axes[0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
