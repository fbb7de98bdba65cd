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


def _trajectory_panels(axes, diagnostics: pd.DataFrame, panels, groups=None) -> None:
    """Draw per-task trajectories of a diagnostics table (seeds averaged, the kept "final"
    rows left out) on ``axes``, one (split, column, title) of ``panels`` each, colored by
    ``groups`` (task -> cluster) when given; a dotted line marks the start of the alignment
    phase when there is one."""
    trajectory = diagnostics[diagnostics["phase"] != "final"]
    mean = trajectory.groupby(["task", "split", "epoch"], as_index=False)[
        ["loss", "grad_cosine"]
    ].mean()
    aligned = trajectory.loc[trajectory["phase"] == "alignment", "epoch"]
    start = None if aligned.empty else trajectory.loc[
        trajectory["phase"] == "joint", "epoch"].max()
    for axis, (split, column, title) in zip(axes, panels):
        for task, rows in mean[mean["split"] == split].groupby("task"):
            color = None if groups is None else f"C{int(groups[task]) % 10}"
            axis.plot(rows["epoch"], rows[column], marker=".", linewidth=1, label=task,
                      color=color)
        if start is not None:
            axis.axvline(start, color="grey", linestyle=":", linewidth=1)
        axis.set_xlabel("epoch")
        axis.set_title(title, fontsize=9)
        if column == "grad_cosine":
            axis.axhline(0.0, color="black", linewidth=0.6)
    if mean["task"].nunique() <= 12:
        axes[0].legend(fontsize=6)


COSINE_PANEL = ("train", "grad_cosine", "cos(g_i, sum_j g_j), trunk, training split")


def transfer_diagnostics(diagnostics: pd.DataFrame, path) -> None:
    """Transfer diagnostics of one run (a diagnostics table, :mod:`taskgroup.models.diagnostics`;
    several seeds are averaged): per-task training and validation loss (left, middle) and
    the cosine between each task's trunk gradient and the summed gradient on the training
    split (right), against the epoch."""
    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    _trajectory_panels(
        axes, diagnostics,
        [("train", "loss", "training loss"), ("val", "loss", "validation loss"),
         COSINE_PANEL],
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def generalization_diagnostics(
    diagnostics: pd.DataFrame, gaps: dict[str, pd.DataFrame], path, title: str,
    groups: dict | None = None,
) -> None:
    """One model's validation loss and gradient cosine against the epoch (left, middle;
    ``diagnostics`` table, seeds averaged; tasks colored by ``groups``, task -> cluster),
    and the generalization gap per task against the single-task models at matched training
    loss (right; ``gaps``: grouping name -> generalization-gap rows, averaged over seeds;
    above 0 = worse than the task alone)."""
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    _trajectory_panels(
        axes[:2], diagnostics, [("val", "loss", f"validation loss, {title}"), COSINE_PANEL],
        groups,
    )
    right = axes[2]
    for number, (name, rows) in enumerate(sorted(gaps.items())):
        if rows.empty:
            continue
        per_task = rows.groupby("task")["gap"].mean().sort_index()
        right.scatter(per_task.to_numpy(), np.arange(len(per_task)) + 0.15 * number,
                      s=14, color=f"C{number}", label=name)
        right.set_yticks(np.arange(len(per_task)), per_task.index, fontsize=6)
    right.axvline(0.0, color="black", linewidth=0.8)
    right.set_xlabel("val loss minus the single-task model's at matched training loss")
    right.set_title("generalization gap per task (mean over seeds)", fontsize=9)
    if any(not rows.empty for rows in gaps.values()):
        right.legend(fontsize=7)
    else:
        right.text(0.5, 0.5, "no single-task models:\nadd stl to evaluation.baselines",
                   ha="center", va="center", transform=right.transAxes)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def variant_changes(
    changes: pd.DataFrame, clusters: pd.DataFrame, path, title: str
) -> None:
    """Per-task change in test metric of each variant over plain training (top; a
    variant_changes table of one grouping) and the tasks' loss weights in the reweighted
    variants (bottom), tasks ordered by ``clusters`` (grouping table)."""
    order = clusters.sort_values(["group", "task"])["task"].tolist()
    variants = sorted(changes["variant"].unique())
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(max(7.0, 0.28 * len(order) + 2), 6.5), sharex=True
    )
    width = 0.8 / max(1, len(variants))
    positions = np.arange(len(order))
    for number, variant in enumerate(variants):
        rows = changes[changes["variant"] == variant].set_index("task").reindex(order)
        offset = positions + (number - (len(variants) - 1) / 2) * width
        top.bar(offset, rows["change"], width, color=f"C{number}",
                label=f"{variant} (mean {rows['change'].mean():+.4f})")
        if rows["loss_weight"].ne(1.0).any():
            bottom.bar(offset, rows["loss_weight"], width, color=f"C{number}", label=variant)
    boundaries = np.flatnonzero(np.diff(clusters.set_index("task").loc[order, "group"]))
    for axis in (top, bottom):
        for boundary in boundaries:
            axis.axvline(boundary + 0.5, color="grey", linewidth=0.6)
    top.axhline(0.0, color="black", linewidth=0.8)
    top.set_ylabel("test metric minus plain's")
    top.set_title(title)
    top.legend(fontsize=7)
    bottom.axhline(1.0, color="black", linewidth=0.8)
    bottom.set_ylabel("loss weight (1 = plain)")
    bottom.set_xticks(positions, order, rotation=90, fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
