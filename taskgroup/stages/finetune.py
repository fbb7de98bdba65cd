"""Stage finetune_subsets: real fine-tuning of the meta-initialization on each subset of a chunk."""

from __future__ import annotations

import logging

from taskgroup.data import designs as subsets_lib
from taskgroup.data.tables import write_table
from taskgroup.estimate.finetune import FinetuneSettings
from taskgroup.estimate.valuers import Valuer, finetune_valuer
from taskgroup.models.network import load_checkpoint
from taskgroup.stages.common import load_task_data, prepare_torch

log = logging.getLogger(__name__)


def read_finetune_valuer(
    examples_path, tasks_path, model_path, settings: FinetuneSettings, threads: int = 1,
    metric: str = "auto",
) -> tuple[list[str], Valuer]:
    """Read the data and the meta-initialization once and return ``(task_names, value)``,
    ``value`` the estimator "finetune" (see :func:`taskgroup.estimate.valuers.finetune_valuer`)."""
    device = prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = data.to(device)
    meta_model = load_checkpoint(model_path, data.task_names).to(device)
    return list(data.task_names), finetune_valuer(meta_model, data, settings, metric)


def finetune_subsets(
    examples_path, tasks_path, model_path, subsets_path, output_path, chunk: int,
    chunk_size: int, settings: FinetuneSettings, threads: int = 1, metric: str = "auto",
) -> None:
    """Fine-tune the meta-initialization on every subset of one chunk; write their values."""
    _, value = read_finetune_valuer(
        examples_path, tasks_path, model_path, settings, threads, metric
    )
    mine = subsets_lib.read_chunk(subsets_path, chunk, chunk_size)
    log.info("chunk %d: %d subsets", chunk, mine["subset_id"].nunique())
    values = value(mine)
    values["design"] = subsets_lib.design_of(mine, subsets_path)
    write_table(values, output_path)
