"""Stages from per-subset values to groupings: affinity, clustering, baselines."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from taskgroup import affinity as affinity_lib
from taskgroup import clustering, groupings
from taskgroup.evaluation import ari_against_planted
from taskgroup.tables import AFFINITY, SUBSET_VALUES, TASKS, read_table, write_table

log = logging.getLogger(__name__)


def compute_affinity(values_path, tasks_path, output_path) -> None:
    """The long affinity table from the subset values' validation losses."""
    tasks = read_table(tasks_path, TASKS)
    values = read_table(values_path, SUBSET_VALUES)
    names = tasks.sort_values("task_index")["task"].tolist()
    table = affinity_lib.affinity_table(values, names)
    uncovered = int((table["n_subsets"] == 0).sum())
    if uncovered:
        log.warning("%d ordered task pairs share no subset: their affinity is NaN", uncovered)
    write_table(table, output_path)


def cluster_tasks(
    affinity_path, tasks_path, grouping_path, objective_path, method, similarity,
    n_clusters, seed,
) -> None:
    """Cluster the normalized affinity; write the grouping and the average-density objective."""
    tasks = read_table(tasks_path, TASKS)
    names = tasks.sort_values("task_index")["task"].tolist()
    table = read_table(affinity_path, AFFINITY)
    normalized = affinity_lib.square(table, names, "normalized")
    labels = clustering.cluster_tasks(normalized, n_clusters, method, similarity, seed)
    grouping = pd.DataFrame({"task": names, "group": labels})
    objective = clustering.average_density(normalized, labels)
    log.info(
        "%s clustering (%s similarity): %d clusters of sizes %s; average density %.4f",
        method, similarity, n_clusters, np.bincount(labels).tolist(), objective,
    )
    write_table(grouping, grouping_path)
    write_table(
        pd.DataFrame(
            {
                "method": [method],
                "similarity": [similarity],
                "n_clusters": [int(n_clusters)],
                "average_density": [objective],
                "ari_vs_planted": [ari_against_planted(grouping, tasks)],
            }
        ),
        objective_path,
    )


def baseline_grouping(name, tasks_path, output_path) -> None:
    """Write a baseline grouping (naive_mtl, stl or planted)."""
    write_table(groupings.baseline_grouping(name, read_table(tasks_path, TASKS)), output_path)
