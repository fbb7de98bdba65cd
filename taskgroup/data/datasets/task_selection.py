"""Choosing tasks by name, the same for every dataset kind: ``dataset.<kind>.exclude_tasks``
(and the table's ``tasks``).

Entries are normalized like the table's task names (:func:`normalize_task_name`: 7 and 7.0
name the task "7"); a name the data lacks, an empty or repeated entry, and a list that
leaves no task raise :class:`DataError` naming the key, the offending entries and the
data's tasks.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd

from taskgroup.data.datasets.errors import DataError

log = logging.getLogger(__name__)

SHOWN = 5  # task names listed in a message


def shown_names(values) -> str:
    """The first :data:`SHOWN` of ``values`` as reprs, with the count when there are more."""
    values = list(values)
    text = ", ".join(repr(v) for v in values[:SHOWN])
    return text + (f", ... ({len(values)} in all)" if len(values) > SHOWN else "")


def normalize_task_name(value) -> str | None:
    """The task name of a raw task value: text stripped of surrounding spaces, a whole
    number as its decimal digits (7, np.int16(7), 7.0 -> "7"), a bool as True/False; None
    for a missing value or empty text."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return str(int(value))
    name = str(value).strip()
    return name or None


def listed_tasks(
    values: Sequence, available: Sequence[str], key: str, where: str, source: str
) -> list[str]:
    """The task names ``values`` list (config key ``key``, e.g.
    ``dataset.planted.exclude_tasks``), normalized, each one of ``available`` (the data's
    tasks). ``where``: the prefix of a message about the data (its file and ': ', or '');
    ``source``: what holds the task names (e.g. "column 'task'")."""
    listed = []
    for value in values:
        name = normalize_task_name(value)
        if name is None or name in listed:
            raise DataError(
                f"{key}: {value!r} is empty or repeats another entry (entries are "
                f"normalized like task names: {list(values)})"
            )
        listed.append(name)
    known = set(available)
    lacking = [name for name in listed if name not in known]
    if lacking:
        raise DataError(
            f"{where}{key} names task(s) {lacking} that {source} does not have; the data's "
            f"{len(available)} tasks are {shown_names(available)}"
        )
    return listed


def kept_tasks(
    available: Sequence[str], exclude: Sequence, section: str, where: str, source: str,
    keep: Sequence | None = None,
) -> list[str]:
    """The tasks of ``available`` (the data's, in canonical order) that ``keep`` lists (all
    when None; the table's ``tasks``) and ``exclude`` does not (``<section>.exclude_tasks``),
    in that order. ``where`` and ``source`` as in :func:`listed_tasks`. Raises DataError
    when ``exclude`` leaves no task."""
    chosen = set(
        available if keep is None
        else listed_tasks(keep, available, f"{section}.tasks", where, source)
    )
    excluded = listed_tasks(exclude, available, f"{section}.exclude_tasks", where, source)
    if excluded:
        chosen -= set(excluded)
        if not chosen:
            raise DataError(
                f"{where}{section}.exclude_tasks leaves out every task "
                + (f"of {section}.tasks" if keep is not None else "of the data")
                + f" ({shown_names(excluded)}); keep at least one"
            )
        log.info(
            "%s%s.exclude_tasks leaves out %d task(s): %s; %d remain",
            where, section, len(excluded), shown_names(excluded), len(chosen),
        )
    return [name for name in available if name in chosen]
