"""Helpers shared by the stages that train networks."""

from __future__ import annotations

import logging

import pandas as pd
import torch

from taskgroup.data.examples import TaskData, build_task_data
from taskgroup.data.tables import EXAMPLES, TASKS, read_table, write_atomically
from taskgroup.models.network import save_checkpoint
from taskgroup.seeding import pick_device

log = logging.getLogger(__name__)


def load_task_data(examples_path, tasks_path) -> tuple[TaskData, pd.DataFrame]:
    """The examples as tensors on the chosen device, and the tasks table."""
    tasks = read_table(tasks_path, TASKS)
    examples = read_table(examples_path, EXAMPLES)
    data = build_task_data(examples, tasks, source=str(examples_path))
    return data, tasks


def prepare_torch(threads: int) -> torch.device:
    torch.set_num_threads(max(int(threads), 1))
    device = pick_device()
    log.info("device %s, %d torch thread(s)", device, torch.get_num_threads())
    return device


def save_model_atomically(model, task_names, path) -> None:
    write_atomically(path, lambda partial: save_checkpoint(model, task_names, partial))


def check_option_output(name: str, enabled: bool, path) -> None:
    """An option's extra output must be given exactly when the option is on."""
    if enabled != (path is not None):
        raise ValueError(
            f"training_options {name}: enabled={enabled} but its output path is {path!r}"
        )
