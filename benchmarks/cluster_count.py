"""Benchmark: what the held-out count scan of ``n_clusters: auto`` sees on a run's affinity.

Usage:
  python benchmarks/cluster_count.py RESULTS [--methods sdp spectral] [--folds 2 3 5 10]
      [--max-clusters 10]

RESULTS is a run's ``results/<name>`` folder with ``data/tasks.parquet`` (planted groups)
and ``subset_values/gradient/random.parquet`` (or ``finetune``), e.g. after
``snakemake --until higher_order_affinity``. For every method and fold count it prints the
count ``choose_n_clusters`` picks (one-standard-error rule), the ARI of that clustering to
the planted groups and the score curve; then, on the default fold count, the held-out score
of the planted partition itself (the same folds, so comparable with the curve) and the
planted groups' block means of the full normalized affinity (within-group means on the
diagonal). When the planted partition's score is not within reach of the curve's lowest
scores, no count rule on this score can return it: the affinity supports another structure.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

from taskgroup.data.tables import SUBSET_VALUES, TASKS, read_table
from taskgroup.group import affinity, clustering


def _values_path(results: Path) -> Path:
    for estimator in ("gradient", "finetune"):
        path = results / "subset_values" / estimator / "random.parquet"
        if path.exists():
            return path
    raise FileNotFoundError(f"{results}/subset_values/{{gradient,finetune}}/random.parquet")


def block_means(normalized: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Mean normalized affinity per pair of planted groups (off-diagonal pairs only)."""
    n = int(groups.max()) + 1
    off = ~np.eye(len(groups), dtype=bool)
    means = np.full((n, n), np.nan)
    for a in range(n):
        for b in range(n):
            mask = np.outer(groups == a, groups == b) & off & np.isfinite(normalized)
            if mask.any():
                means[a, b] = normalized[mask].mean()
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--methods", nargs="+", default=["sdp", "spectral"])
    parser.add_argument("--folds", nargs="+", type=int, default=[2, 3, 5, 10])
    parser.add_argument("--max-clusters", type=int, default=10)
    args = parser.parse_args()

    tasks = read_table(args.results / "data" / "tasks.parquet", TASKS).sort_values("task_index")
    names = tasks["task"].tolist()
    groups = tasks["planted_group"].to_numpy()
    membership, losses = affinity.value_matrix(
        read_table(_values_path(args.results), SUBSET_VALUES), names
    )
    normalized = affinity.affinity_matrices(membership, losses)[1]
    settings = clustering.ClusteringSettings("profile", "kmeans", "auto", args.max_clusters, 0)
    for method in args.methods:
        for n_folds in args.folds:
            folds = clustering.fold_affinities(membership, losses, n_folds, 0)
            found = clustering.choose_n_clusters(normalized, method, settings, folds=folds)
            ari = adjusted_rand_score(groups, found.labels)
            curve = " ".join(f"{score:.3f}" for score in found.scan["score"])
            print(f"{method:8s} folds {n_folds:2d}: chose {found.n_clusters:2d} (ARI {ari:.2f});"
                  f" score by count 1..: {curve}")
    folds = clustering.fold_affinities(membership, losses, 5, 0)
    ratios = []
    for fit, held in folds:
        one = clustering.held_out_block_error(fit, held, np.zeros(len(names), dtype=np.int64))
        ratios.append(clustering.held_out_block_error(fit, held, groups) / one)
    ratios = np.array(ratios)
    print(f"planted partition ({int(groups.max()) + 1} groups), 5 folds: score "
          f"{ratios.mean():.3f} +- {ratios.std(ddof=1) / np.sqrt(len(ratios)):.3f} (se)")
    print("planted block means of the normalized affinity (rows, columns: planted groups):")
    print(np.array2string(block_means(normalized, groups), precision=2, suppress_small=True))
    for n in range(2, args.max_clusters + 1):
        labels = {
            method: clustering.partition(normalized, method, replace(settings, n_clusters=n))
            for method in args.methods
        }
        print(f"{n:2d} clusters of the full affinity, ARI: " + ", ".join(
            f"{method} {adjusted_rand_score(groups, found):.2f}"
            for method, found in labels.items()
        ))


if __name__ == "__main__":
    main()
