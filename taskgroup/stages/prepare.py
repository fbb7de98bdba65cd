"""The preparation stage: the examples and tasks tables of the configured dataset."""

from __future__ import annotations

import os

from taskgroup.data.datasets import dataset_kind
from taskgroup.data.tables import write_table


def prepare_dataset(
    kind: str, spec, examples_path: str | os.PathLike, tasks_path: str | os.PathLike
) -> None:
    """Build the dataset of ``kind`` (a name in
    :data:`taskgroup.data.datasets.DATASET_KINDS`) from its ``spec`` (the kind's ``spec`` of
    the ``dataset.<kind>`` section) and write both tables; on any error nothing is written."""
    examples, tasks = dataset_kind(kind).load(spec)
    write_table(examples, examples_path)
    write_table(tasks, tasks_path)
