"""Stages that build the affinity sources, each written as a long affinity table:
higher_order_affinity (mean f_i(S) over the random design), pairwise_affinity (the pair
design), lookahead_affinity (TAG), meta_init_affinity (gradient cosine, covariance)."""

from __future__ import annotations

import logging
import time

import numpy as np

from taskgroup.data.tables import SUBSET_VALUES, TASKS, read_table, write_table
from taskgroup.group import affinity as affinity_lib
from taskgroup.group.affinity import long_table

log = logging.getLogger(__name__)

# The torch side (taskgroup.estimate, taskgroup.models, the device) is imported inside the
# two stages that train or read a network: higher_order_affinity and pairwise_affinity only
# read tables, and importing torch would be most of their CPU time.


def write_matrix_affinity(matrix: np.ndarray, task_names: list[str], output_path) -> None:
    """Write a (k, k) "higher = train together" matrix as an affinity table: raw = the
    matrix, normalized = symmetrized with z-scored off-diagonal entries, n_subsets = 0 (no
    subsets are involved)."""
    from taskgroup.estimate import affinity_sources

    normalized = affinity_sources.normalize_affinity(matrix)
    counts = np.zeros(matrix.shape, dtype=np.int64)
    write_table(long_table(matrix, normalized, counts, task_names), output_path)


def lookahead_affinity(
    examples_path, tasks_path, output_path, hidden_sizes, training: dict, seed: int,
    every: int, lookahead_lr, threads: int = 1,
) -> None:
    """TAG lookahead affinity over a multi-head training run with the meta-init settings."""
    from taskgroup.estimate import affinity_sources
    from taskgroup.models.training import TrainSettings
    from taskgroup.stages.common import load_task_data, prepare_torch

    device = prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = data.to(device)
    started = time.perf_counter()
    matrix = affinity_sources.lookahead_matrix(
        data, hidden_sizes, TrainSettings(**training), seed, device, every=every,
        lookahead_lr=lookahead_lr,
    )
    log.info("lookahead affinity of %d tasks in %.1f s", data.n_tasks,
             time.perf_counter() - started)
    write_matrix_affinity(matrix, data.task_names, output_path)


def meta_init_affinity(
    examples_path, tasks_path, model_path, output_path, source: str,
    covariance_features: str = "inputs", threads: int = 1,
) -> None:
    """Gradient-cosine or covariance-similarity affinity at the meta-initialization."""
    from taskgroup.estimate import affinity_sources
    from taskgroup.models.network import load_checkpoint
    from taskgroup.stages.common import load_task_data, prepare_torch

    device = prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    model = load_checkpoint(model_path, data.task_names)
    started = time.perf_counter()
    if source == "gradient_cosine":
        matrix = affinity_sources.gradient_cosine_affinity(model.to(device), data.to(device))
    elif source == "covariance":
        trunk = model if covariance_features == "trunk" else None
        matrix = affinity_sources.covariance_similarity(data, model=trunk)
    else:
        raise ValueError(
            f"affinity source {source!r}: expected 'gradient_cosine' or 'covariance'"
        )
    log.info("%s affinity of %d tasks in %.2f s", source, data.n_tasks,
             time.perf_counter() - started)
    write_matrix_affinity(matrix, data.task_names, output_path)


def higher_order_affinity(values_path, tasks_path, output_path) -> None:
    """The long higher-order affinity table from the random design's validation losses."""
    tasks = read_table(tasks_path, TASKS)
    values = read_table(values_path, SUBSET_VALUES)
    names = tasks.sort_values("task_index")["task"].tolist()
    table = affinity_lib.affinity_table(values, names)
    uncovered = int((table["n_subsets"] == 0).sum())
    if uncovered:
        log.warning("%d ordered task pairs share no subset: their affinity is NaN", uncovered)
    write_table(table, output_path)


def pairwise_affinity(values_path, tasks_path, output_path, every_pair: bool) -> None:
    """The long pairwise affinity table from the singletons-and-pairs design: every pair
    (``every_pair``; a missing one is an error), or a sample of them (the others NaN)."""
    tasks = read_table(tasks_path, TASKS)
    names = tasks.sort_values("task_index")["task"].tolist()
    values = read_table(values_path, SUBSET_VALUES)
    table = affinity_lib.pairwise_affinity_table(values, names, every_pair=every_pair)
    if not every_pair:
        unsampled = int((table["n_subsets"] == 0).sum()) // 2
        log.info(
            "pairwise affinity from a sample of pairs: %d of the %d pairs of %d tasks were not "
            "sampled; their affinity is NaN (neutral in the clustering)",
            unsampled, len(names) * (len(names) - 1) // 2, len(names),
        )
    write_table(table, output_path)
