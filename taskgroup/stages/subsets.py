"""Stages of the subset design and the gathering of per-subset values."""

from __future__ import annotations

import logging

from taskgroup.data import designs as subsets_lib
from taskgroup.data.tables import TASKS, read_table, write_table

log = logging.getLogger(__name__)


def sample_subsets(tasks_path, subsets_path, pair_counts_path, size, count, seed) -> None:
    """Draw the subsets table and its pair-coverage counts."""
    tasks = read_table(tasks_path, TASKS)
    names = tasks.sort_values("task_index")["task"].tolist()
    table = subsets_lib.random_design(names, size, count, seed).assign(design="random")
    counts = subsets_lib.pair_counts(table, names)
    off_diagonal = counts.loc[counts["task_i"] != counts["task_j"], "n_subsets"]
    log.info(
        "%d subsets of size %d over %d tasks; pair coverage n_ij min %d, mean %.2f "
        "(expected %.2f), pairs never covered: %d",
        count, size, len(names), off_diagonal.min(), off_diagonal.mean(),
        subsets_lib.expected_pair_count(len(names), size, count),
        int((off_diagonal == 0).sum()) // 2,
    )
    write_table(table, subsets_path)
    write_table(counts, pair_counts_path)


def pair_design(tasks_path, subsets_path, sample: subsets_lib.PairSample | None) -> None:
    """Write the design of every singleton and every pair of tasks, or, with ``sample``,
    of every singleton and a sample of pairs (:func:`taskgroup.data.designs.sampled_pairs`)."""
    tasks = read_table(tasks_path, TASKS)
    names = tasks.sort_values("task_index")["task"].tolist()
    k = len(names)
    if sample is None:
        design = subsets_lib.singletons_and_pairs(k)
        log.info("%d singletons and %d pairs over %d tasks", k, len(design) - k, k)
    else:
        design = subsets_lib.singletons_and_sampled_pairs(k, sample)
        log.info(
            "%d singletons and a sample of %d of the %d pairs over %d tasks (each task in %d "
            "pairs, seed %d): subsets.pairs.sample_above_tasks is below k",
            k, len(design) - k, k * (k - 1) // 2, k, sample.per_task, sample.seed,
        )
    table = subsets_lib.design_table(design, names).assign(design="pairs")
    write_table(table, subsets_path)
