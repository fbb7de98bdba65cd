"""One function per workflow stage: read the stage's input files, compute, write its outputs.

The Snakemake scripts in ``workflow_scripts/`` only unpack ``snakemake.input/params/output``
and call these, so every stage can be run and tested without Snakemake. Outputs are
written atomically (:func:`taskgroup.tables.write_table`); a failing stage leaves none.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from taskgroup import affinity as affinity_lib
from taskgroup import clustering, groupings, subsets as subsets_lib
from taskgroup.data import TaskData, build_task_data
from taskgroup.evaluation import per_task_table, summary_table
from taskgroup.finetune import finetune_subsets
from taskgroup.model import load_checkpoint, save_checkpoint
from taskgroup.tables import (
    AFFINITY,
    EXAMPLES,
    GROUP_RESULTS,
    GROUPING,
    SUBSET_VALUES,
    SUBSETS,
    TASKS,
    read_table,
    write_table,
)
from taskgroup.train import (
    TrainSettings,
    derived_seed,
    evaluate,
    pick_device,
    train_new_model,
)

log = logging.getLogger(__name__)


def load_task_data(examples_path, tasks_path) -> tuple[TaskData, pd.DataFrame]:
    """The examples as tensors on the chosen device, and the tasks table."""
    tasks = read_table(tasks_path, TASKS)
    examples = read_table(examples_path, EXAMPLES)
    data = build_task_data(examples, tasks, source=str(examples_path))
    return data, tasks


def _prepare_torch(threads: int) -> torch.device:
    torch.set_num_threads(max(int(threads), 1))
    device = pick_device()
    log.info("device %s, %d torch thread(s)", device, torch.get_num_threads())
    return device


def _save_model_atomically(model, task_names, path) -> None:
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        save_checkpoint(model, task_names, partial)
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()


def train_meta_init(
    examples_path, tasks_path, model_path, metrics_path, hidden_sizes, training: dict,
    seed: int, threads: int = 1,
) -> None:
    """Train the multi-head model on all tasks; save it and its per-task validation metrics
    (columns task, split, loss, metric, n_examples)."""
    device = _prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = data.to(device)
    settings = TrainSettings(**training)
    every_task = torch.arange(data.n_tasks, device=device)
    started = time.perf_counter()
    model = train_new_model(data, every_task, hidden_sizes, settings, seed, device)
    metrics = evaluate(model, data, every_task, splits=("val",))
    log.info(
        "meta-initialization: %d tasks, %d epochs in %.1f s; mean val loss %.4f, accuracy %.4f",
        data.n_tasks, settings.epochs, time.perf_counter() - started,
        metrics["loss"].mean(), metrics["metric"].mean(),
    )
    _save_model_atomically(model.cpu(), data.task_names, model_path)
    write_table(metrics, metrics_path)


def sample_subsets(tasks_path, subsets_path, pair_counts_path, size, count, seed) -> None:
    """Draw the subsets table and its pair-coverage counts."""
    tasks = read_table(tasks_path, TASKS)
    names = tasks.sort_values("task_index")["task"].tolist()
    table = subsets_lib.sample_subsets(names, size, count, seed)
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


def finetune_chunk(
    examples_path, tasks_path, model_path, subsets_path, output_path, chunk: int,
    chunk_size: int, training: dict, seed: int, threads: int = 1,
) -> None:
    """Fine-tune the meta-initialization on every subset of one chunk; write their values."""
    device = _prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = data.to(device)
    table = read_table(subsets_path, SUBSETS)
    mine = table[subsets_lib.chunk_of(table["subset_id"].to_numpy(), chunk_size) == chunk]
    if mine.empty:
        raise ValueError(f"{subsets_path}: chunk {chunk} (of size {chunk_size}) holds no subsets")
    meta_model = load_checkpoint(model_path, data.task_names).to(device)
    log.info("chunk %d: %d subsets", chunk, mine["subset_id"].nunique())
    values = finetune_subsets(meta_model, data, mine, TrainSettings(**training), seed)
    write_table(values, output_path)


def gather_subset_values(chunk_paths: list, output_path) -> None:
    """Concatenate the per-chunk subset values into one table, sorted by subset and task."""
    frames = [read_table(path, SUBSET_VALUES) for path in chunk_paths]
    table = pd.concat(frames, ignore_index=True)
    duplicated = table.duplicated(["subset_id", "task", "split", "estimator"])
    if duplicated.any():
        raise ValueError(f"subset values: {int(duplicated.sum())} duplicated rows across chunks")
    table = table.sort_values(["subset_id", "task", "split"], ignore_index=True)
    log.info("gathered %d rows from %d chunks", len(table), len(chunk_paths))
    write_table(table, output_path)


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
                "ari_vs_planted": [groupings.ari_against_planted(grouping, tasks)],
            }
        ),
        objective_path,
    )


def baseline_grouping(name, tasks_path, output_path) -> None:
    """Write a baseline grouping (naive_mtl, stl or planted)."""
    write_table(groupings.baseline_grouping(name, read_table(tasks_path, TASKS)), output_path)


def train_group_model(
    examples_path, tasks_path, grouping_path, grouping: str, group: int, results_path,
    model_path, hidden_sizes, training: dict, seed: int, threads: int = 1,
) -> None:
    """Train one multi-head model on the tasks of one group; write its per-task val and test
    loss and metric (group_results table) and the model.

    The seed is derived from (seed, member task names), so the same group gets the same model
    in whichever grouping it appears.
    """
    device = _prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = data.to(device)
    members = read_table(grouping_path, GROUPING)
    members = members.loc[members["group"] == group, "task"].tolist()
    if not members:
        raise ValueError(f"{grouping_path}: group {group} has no tasks")
    indices = data.task_indices(members).to(device)
    settings = TrainSettings(**training, select_best_epoch=True)
    started = time.perf_counter()
    model = train_new_model(
        data, indices, hidden_sizes, settings, derived_seed(seed, *sorted(members)), device
    )
    results = evaluate(model, data, indices, splits=("val", "test")).drop(columns="n_examples")
    results.insert(0, "group", int(group))
    results.insert(0, "grouping", grouping)
    log.info(
        "%s group %d: %d tasks trained in %.1f s; mean test accuracy %.4f",
        grouping, group, len(members), time.perf_counter() - started,
        results.loc[results["split"] == "test", "metric"].mean(),
    )
    _save_model_atomically(model.cpu(), data.task_names, model_path)
    write_table(results, results_path)


def evaluate_groupings(
    grouping_paths: dict, result_paths: list, tasks_path, per_task_path, summary_path
) -> None:
    """The per-task and summary comparison tables of every grouping."""
    tasks = read_table(tasks_path, TASKS)
    loaded = {name: read_table(path, GROUPING) for name, path in grouping_paths.items()}
    per_task = per_task_table([read_table(path, GROUP_RESULTS) for path in result_paths])
    summary = summary_table(per_task, loaded, tasks)
    log.info("summary:\n%s", summary.to_string(index=False))
    write_table(per_task, per_task_path)
    write_table(summary, summary_path)


def plot_figures(
    affinity_path, clusters_path, per_task_path, tasks_path, heatmap_path,
    per_task_figure_path,
) -> None:
    """The affinity heatmap ordered by cluster and the per-task metric of each grouping."""
    from taskgroup import plots

    tasks = read_table(tasks_path, TASKS)
    names = tasks.sort_values("task_index")["task"].tolist()
    table = read_table(affinity_path, AFFINITY)
    plots.affinity_heatmap(
        affinity_lib.square(table, names, "normalized"),
        names,
        read_table(clusters_path, GROUPING).set_index("task").loc[names, "group"].to_numpy(),
        heatmap_path,
    )
    plots.per_task_metric(pd.read_parquet(per_task_path), per_task_figure_path)
