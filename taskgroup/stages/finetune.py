"""Stage finetune_subsets: real fine-tuning of the meta-initialization on each subset of a chunk."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pandas as pd

from taskgroup.data import designs as subsets_lib
from taskgroup.data.tables import write_table
from taskgroup.estimate.finetune import finetune_values
from taskgroup.models.network import load_checkpoint
from taskgroup.models.training import TrainSettings
from taskgroup.stages.common import load_task_data, prepare_torch

log = logging.getLogger(__name__)


def finetune_valuer(
    examples_path, tasks_path, model_path, training: dict, seed: int, threads: int = 1,
    metric: str = "auto",
) -> tuple[list[str], Callable[[pd.DataFrame], pd.DataFrame]]:
    """The estimator "finetune" as a function: load the data and the meta-initialization
    once and return ``(task_names, value)``, where ``value(subsets)`` fine-tunes a copy of the
    meta-initialization on each subset of a long subsets table (subset_id, task) and returns
    its subset_values table (estimator "finetune", no design column; each subset's seed is
    derived from (seed, subset_id), see :func:`taskgroup.estimate.finetune.finetune_subsets`)."""
    device = prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = data.to(device)
    meta_model = load_checkpoint(model_path, data.task_names).to(device)
    settings = TrainSettings(**training)

    def value(subsets: pd.DataFrame) -> pd.DataFrame:
        return finetune_values(meta_model, data, subsets, settings, seed, metric=metric)

    return list(data.task_names), value


def finetune_subsets(
    examples_path, tasks_path, model_path, subsets_path, output_path, chunk: int,
    chunk_size: int, training: dict, seed: int, threads: int = 1, metric: str = "auto",
) -> None:
    """Fine-tune the meta-initialization on every subset of one chunk; write their values."""
    _, value = finetune_valuer(
        examples_path, tasks_path, model_path, training, seed, threads, metric
    )
    mine = subsets_lib.read_chunk(subsets_path, chunk, chunk_size)
    log.info("chunk %d: %d subsets", chunk, mine["subset_id"].nunique())
    values = value(mine)
    values["design"] = subsets_lib.design_of(mine, subsets_path)
    write_table(values, output_path)


