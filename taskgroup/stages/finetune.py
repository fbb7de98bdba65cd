"""Stage finetune_subsets: real fine-tuning of the meta-initialization on each subset of a chunk."""

from __future__ import annotations

import logging

from taskgroup.data import designs as subsets_lib
from taskgroup.data.tables import LR_CURVE, chosen_candidate, write_table
from taskgroup.estimate.finetune import FinetuneSettings
from taskgroup.estimate.valuers import Valuer, finetune_valuer
from taskgroup.models.network import load_checkpoint
from taskgroup.stages.common import load_task_data, prepare_torch

log = logging.getLogger(__name__)


def with_chosen_lr(settings: FinetuneSettings, lr_curve_path=None) -> FinetuneSettings:
    """``settings`` with lr "auto" replaced by the chosen rate of the lr curve table at
    ``lr_curve_path`` (written by :func:`taskgroup.stages.validate.calibrate_finetune`); a
    numeric lr is returned unchanged. Raises ValueError when lr is "auto" and no table is
    given, or when the table does not mark exactly one row chosen."""
    if not settings.lr_is_auto:
        return settings
    if lr_curve_path is None:
        raise ValueError('finetune.lr is "auto", but no lr curve table was given')
    lr = chosen_candidate(lr_curve_path, LR_CURVE, "lr")
    log.info("finetune.lr auto: %g, chosen on the held-out subsets (%s)", lr, lr_curve_path)
    return settings.with_lr(lr)


def read_finetune_valuer(
    examples_path, tasks_path, model_path, settings: FinetuneSettings, threads: int = 1,
    metric: str = "auto", lr_curve_path=None,
) -> tuple[list[str], Valuer]:
    """Read the data and the meta-initialization once and return ``(task_names, value)``,
    ``value`` the estimator "finetune" (see :func:`taskgroup.estimate.valuers.finetune_valuer`)
    with ``settings``' lr, or with lr "auto" the one chosen in the lr curve table at
    ``lr_curve_path`` (see :func:`with_chosen_lr`)."""
    settings = with_chosen_lr(settings, lr_curve_path)
    device = prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = data.to(device)
    meta_model = load_checkpoint(model_path, data.task_names).to(device)
    return list(data.task_names), finetune_valuer(meta_model, data, settings, metric)


def finetune_subsets(
    examples_path, tasks_path, model_path, subsets_path, output_path, chunk: int,
    chunk_size: int, settings: FinetuneSettings, threads: int = 1, metric: str = "auto",
    lr_curve_path=None,
) -> None:
    """Fine-tune the meta-initialization on every subset of one chunk; write their values.
    ``lr_curve_path``: the lr curve table, needed when ``settings``' lr is "auto" (see
    :func:`with_chosen_lr`)."""
    _, value = read_finetune_valuer(
        examples_path, tasks_path, model_path, settings, threads, metric, lr_curve_path
    )
    mine = subsets_lib.read_chunk(subsets_path, chunk, chunk_size)
    log.info("chunk %d: %d subsets", chunk, mine["subset_id"].nunique())
    values = value(mine)
    values["design"] = subsets_lib.design_of(mine, subsets_path)
    write_table(values, output_path)
