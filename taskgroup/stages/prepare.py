"""The preparation stage: the examples and tasks tables of the configured dataset."""

from __future__ import annotations

import logging
import os

from taskgroup.data.datasets import dataset_decisions, dataset_kind
from taskgroup.data.tables import write_table

log = logging.getLogger(__name__)


def prepare_dataset(
    kind: str, spec, examples_path: str | os.PathLike, tasks_path: str | os.PathLike,
    decisions_path: str | os.PathLike,
) -> None:
    """Build the dataset of ``kind`` (a name in
    :data:`taskgroup.data.datasets.DATASET_KINDS`) from its ``spec`` (the kind's ``spec`` of
    the ``dataset.<kind>`` section) and write both tables and what was decided on the way
    (the run_decisions table: features, tasks kept and left out); on any error nothing is
    written."""
    examples, tasks = dataset_kind(kind).load(spec)
    decisions = dataset_decisions(kind, spec, examples, tasks)
    log.info("decided:\n%s", decisions.to_string(index=False))
    write_table(examples, examples_path)
    write_table(tasks, tasks_path)
    write_table(decisions, decisions_path)
