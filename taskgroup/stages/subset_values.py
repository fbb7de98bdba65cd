"""Stage gather_subset_values: the chunks of one design and estimator, as one table."""

from __future__ import annotations

import logging

import pandas as pd

from taskgroup.data.tables import SUBSET_VALUES, read_table, write_table

log = logging.getLogger(__name__)


def gather_subset_values(chunk_paths: list, output_path) -> None:
    """Concatenate the per-chunk subset values into one table, sorted by subset and task."""
    frames = [read_table(path, SUBSET_VALUES) for path in chunk_paths]
    table = pd.concat(frames, ignore_index=True)
    duplicated = table.duplicated(["subset_id", "task", "split", "estimator", "design"])
    if duplicated.any():
        raise ValueError(f"subset values: {int(duplicated.sum())} duplicated rows across chunks")
    table = table.sort_values(["subset_id", "task", "split"], ignore_index=True)
    log.info("gathered %d rows from %d chunks", len(table), len(chunk_paths))
    write_table(table, output_path)
