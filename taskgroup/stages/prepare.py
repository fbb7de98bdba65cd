"""The preparation stage: the examples and tasks tables of the configured dataset."""

from __future__ import annotations

import os

from taskgroup.config import graph_module, planted_spec
from taskgroup.data.datasets.planted import generate_planted
from taskgroup.data.datasets.table import load_table, table_spec
from taskgroup.data.tables import write_table


def prepare_dataset(
    kind: str, settings: dict, examples_path: str | os.PathLike, tasks_path: str | os.PathLike
) -> None:
    """Build the dataset of ``kind`` from its config section ``settings`` (``dataset.<kind>``)
    and write both tables; on any error nothing is written."""
    if kind == "planted":
        examples, tasks = generate_planted(planted_spec(settings))
    elif kind == "table":
        examples, tasks = load_table(table_spec(settings))
    elif kind == "graph_communities":
        examples, tasks = graph_module().graph_dataset(settings)
    else:
        raise ValueError(f"dataset.kind = {kind!r} is not supported")
    write_table(examples, examples_path)
    write_table(tasks, tasks_path)
