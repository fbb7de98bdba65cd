"""Stages from an affinity to groupings: cluster_tasks, gather_clustering, baseline_grouping,
random_grouping."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from taskgroup.data.tables import (
    AFFINITY,
    CLUSTER_SCAN,
    GROUPING,
    SUBSET_VALUES,
    TASKS,
    read_table,
    write_table,
)
from taskgroup.group import affinity as affinity_lib
from taskgroup.group import clustering, groupings
from taskgroup.report import plots
from taskgroup.report.evaluation import ari_against_planted

log = logging.getLogger(__name__)


def cluster_tasks(
    affinity_path, tasks_path, grouping_paths: list, objective_path, scan_path, source: str,
    methods: list, settings: clustering.ClusteringSettings, values_path=None,
    auto_folds: int | None = None,
) -> None:
    """Cluster one source's normalized affinity with every method (``grouping_paths`` in
    the order of ``methods``) under ``settings``; write each grouping and one table with a
    row per method: source, method, n_clusters, average_density (on this source's matrix),
    ari_vs_planted. (Solve times go to the log only, so that reruns write identical tables.)

    For n_clusters "auto" with ``values_path`` (the subset values the affinity was built
    from, higher-order only) the count is chosen held out on ``auto_folds`` cross-fit folds of
    its subsets (:func:`taskgroup.group.clustering.choose_n_clusters`), else by the
    silhouette. ``scan_path``: the count scan (CLUSTER_SCAN), one row per method and
    candidate count; for a configured count one row per method with criterion
    "configured"."""
    if len(grouping_paths) != len(methods):
        raise ValueError(f"{len(methods)} methods but {len(grouping_paths)} grouping paths")
    tasks = read_table(tasks_path, TASKS)
    names = tasks.sort_values("task_index")["task"].tolist()
    normalized = affinity_lib.square(read_table(affinity_path, AFFINITY), names, "normalized")
    folds = None
    if settings.n_clusters == "auto" and values_path is not None:
        membership, losses = affinity_lib.value_matrix(
            read_table(values_path, SUBSET_VALUES), names
        )
        folds = clustering.fold_affinities(
            membership, losses, clustering.usable_folds(auto_folds, membership.shape[0]),
            settings.seed,
        )
    rows, scans = [], []
    for method, grouping_path in zip(methods, grouping_paths):
        started = time.perf_counter()
        result = clustering.cluster(normalized, method, settings, folds)
        seconds = time.perf_counter() - started
        if result.scan is not None:
            log.info("%s, n_clusters auto: chose %d\n%s", method, result.n_clusters,
                     result.scan.to_string(index=False))
            scan = result.scan.assign(chosen=result.scan["n_clusters"] == result.n_clusters)
        else:
            scan = pd.DataFrame({"n_clusters": [result.n_clusters], "criterion": "configured",
                                 "score": np.nan, "score_se": np.nan, "chosen": True})
        scans.append(scan.assign(source=source, method=method))
        labels = result.labels
        grouping = pd.DataFrame({"task": names, "group": labels})
        objective = clustering.average_density(normalized, labels)
        log.info(
            "%s on %s affinity (%s similarity, %s rounding): %d clusters of sizes %s; "
            "average density %.4f; %.2f s",
            method, source, settings.similarity, settings.rounding, result.n_clusters,
            np.bincount(labels).tolist(), objective, seconds,
        )
        write_table(grouping, grouping_path)
        rows.append(
            {
                "source": source,
                "method": method,
                "n_clusters": int(labels.max() + 1),
                "average_density": objective,
                "ari_vs_planted": ari_against_planted(grouping, tasks),
            }
        )
    write_table(pd.DataFrame(rows), objective_path)
    scan = pd.concat(scans, ignore_index=True)
    scan["n_clusters"] = scan["n_clusters"].astype(np.int64)
    write_table(scan[list(CLUSTER_SCAN)], scan_path)


def gather_clustering(objective_paths: list, table_path, figure_path) -> None:
    """One table (and a figure) of every method's objective on every source."""
    table = pd.concat([pd.read_parquet(path) for path in objective_paths], ignore_index=True)
    log.info("clustering objective by method:\n%s", table.to_string(index=False))
    write_table(table, table_path)
    plots.clustering_objective(table, figure_path)


def baseline_grouping(name, tasks_path, output_path) -> None:
    """Write a baseline grouping (naive_mtl, stl or planted)."""
    write_table(groupings.baseline_partition(name, read_table(tasks_path, TASKS)), output_path)


def random_grouping(reference_path, output_paths: list) -> None:
    """Write random partitions with the reference grouping's group sizes, partition i of
    ``output_paths`` drawn with seed i."""
    reference = read_table(reference_path, GROUPING)
    for index, output_path in enumerate(output_paths):
        table = groupings.random_partition(reference, seed=index)
        write_table(table, output_path)
    log.info("%d random partitions with group sizes %s", len(output_paths),
             sorted(reference["group"].value_counts().tolist()))
