"""Dataset kinds: each turns its config section (``dataset.<kind>``) into the examples and
tasks tables of :mod:`taskgroup.data.tables`.

:data:`DATASET_KINDS` is the one registry of the kinds that ``dataset.kind`` may name; every
question that depends on the kind (the number of tasks, known groups, the task type, the
files to watch, the tables themselves) goes through it. Importing this package is light
(numpy, pandas; no torch, no scipy), as the config check at parse time uses it: the graph
kind imports its propagation (scipy.sparse) only when it builds the tables.

Kinds:

- ``planted``: synthetic tasks in planted groups (:mod:`.planted`).
- ``table``: the user's own table (:mod:`.table`).
- ``graph_communities``: one binary task per community of a graph (:mod:`.graph_tasks`),
  either drawn (the keys of :data:`.graph_generator.GENERATOR_KEYS`,
  :mod:`.graph_generator`) or read from ``edges_path`` + ``nodes_path`` (+
  ``feature_columns``, ``community_columns``, ``community_groups``; :mod:`.graph_files`),
  plus the shared keys ``hops``, ``propagation``, ``standardize``, ``train_fraction``,
  ``val_fraction``, ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from taskgroup.data.datasets.errors import DataError
from taskgroup.data.datasets.graph_files import FILE_KEYS, GraphFilesSpec
from taskgroup.data.datasets.graph_generator import (
    GENERATOR_KEYS,
    SHARED_KEYS,
    GraphCommunitySpec,
    community_tasks,
)
from taskgroup.data.datasets.planted import generate_planted, planted_spec, planted_task_names
from taskgroup.data.datasets.table import TableSpec, load_table, table_spec, table_task_names
from taskgroup.data.datasets.task_selection import normalize_task_name
from taskgroup.data.tables import feature_columns

__all__ = [
    "DATASET_KINDS", "DataError", "DatasetKind", "dataset_decisions", "dataset_kind", "graph_spec",
]


@dataclass(frozen=True)
class DatasetKind:
    """What the workflow needs to know about one dataset kind.

    name: the ``dataset.kind`` value (and the name of its config section).
    spec: the kind's settings object from its config section (a dict as in the schema);
        raises DataError on a section the schema cannot reject.
    The other functions take that spec:
    n_tasks: the number of tasks k (a user's data: read from its header or task column only).
    has_planted_groups: whether the tasks table will hold a known grouping (planted_group).
    declared_task_type: the type every task has when the settings alone tell it, else None.
    files: the user's files the tables are read from (so that editing them reruns the
        preparation); empty for the generators.
    load: the (examples, tasks) tables; raises DataError on bad data.
    """

    name: str
    spec: Callable[[Mapping], Any]
    n_tasks: Callable[[Any], int]
    has_planted_groups: Callable[[Any], bool]
    declared_task_type: Callable[[Any], str | None]
    files: Callable[[Any], list[str]]
    load: Callable[[Any], tuple[pd.DataFrame, pd.DataFrame]]


# --- graph communities: the section holds either the generator keys or the user files --------

_GRAPH_SECTION = "dataset.graph_communities"


def graph_spec(section: Mapping) -> GraphCommunitySpec | GraphFilesSpec:
    """The spec of a ``dataset.graph_communities`` section: the generator's (missing keys:
    the generator's defaults) or, when the section names ``edges_path`` and ``nodes_path``,
    the user graph's. Raises DataError on unknown keys, on generator keys mixed with file
    keys, and on a user graph without both paths."""
    known = set(SHARED_KEYS) | set(GENERATOR_KEYS) | set(FILE_KEYS)
    unknown = sorted(set(section) - known)
    if unknown:
        raise DataError(
            f"{_GRAPH_SECTION}: unknown key(s) {unknown}; expected some of {sorted(known)}"
        )
    file_keys = sorted(set(section) & set(FILE_KEYS))
    generator_keys = sorted(set(section) & set(GENERATOR_KEYS))
    if file_keys and generator_keys:
        raise DataError(
            f"{_GRAPH_SECTION}: has both user-graph key(s) {file_keys} and generator key(s) "
            f"{generator_keys}; give either edges_path + nodes_path or the generator keys"
        )
    if not file_keys:
        return GraphCommunitySpec(**section)
    missing = [k for k in ("edges_path", "nodes_path") if k not in section]
    if missing:
        raise DataError(f"{_GRAPH_SECTION}: missing key(s) {missing} (a user graph needs both)")
    defaults = GraphCommunitySpec()
    optional = {
        key: None if section.get(key) is None else tuple(section[key])
        for key in ("feature_columns", "community_columns")
    }
    return GraphFilesSpec(
        edges_path=section["edges_path"],
        nodes_path=section["nodes_path"],
        community_groups=section.get("community_groups"),
        **optional,
        **{key: section.get(key, getattr(defaults, key)) for key in SHARED_KEYS},
    )


def _graph_n_tasks(spec: GraphCommunitySpec | GraphFilesSpec) -> int:
    return len(community_tasks(spec)[1])


def _graph_has_planted_groups(spec: GraphCommunitySpec | GraphFilesSpec) -> bool:
    # the generator's blocks; a user graph's community_groups when given
    return isinstance(spec, GraphCommunitySpec) or spec.community_groups is not None


def _graph_files(spec: GraphCommunitySpec | GraphFilesSpec) -> list[str]:
    return [] if isinstance(spec, GraphCommunitySpec) else [spec.edges_path, spec.nodes_path]


def _graph_load(spec: GraphCommunitySpec | GraphFilesSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    # imported here: graph_tasks needs scipy.sparse, which the parse-time config check skips
    from taskgroup.data.datasets.graph_tasks import graph_dataset

    return graph_dataset(spec)


# --- the registry -----------------------------------------------------------------------------


def _table_files(spec: TableSpec) -> list[str]:
    return [path for path in (spec.path, spec.groups_path) if path is not None]


DATASET_KINDS: dict[str, DatasetKind] = {
    kind.name: kind
    for kind in (
        DatasetKind(
            name="planted",
            spec=planted_spec,
            n_tasks=lambda spec: len(planted_task_names(spec)),
            has_planted_groups=lambda spec: True,
            declared_task_type=lambda spec: "binary",
            files=lambda spec: [],
            load=generate_planted,
        ),
        DatasetKind(
            name="table",
            spec=table_spec,
            n_tasks=lambda spec: len(table_task_names(spec)),
            has_planted_groups=lambda spec: spec.groups_path is not None,
            declared_task_type=lambda spec: None if spec.task_type == "auto" else spec.task_type,
            files=_table_files,
            load=load_table,
        ),
        DatasetKind(
            name="graph_communities",
            spec=graph_spec,
            n_tasks=_graph_n_tasks,
            has_planted_groups=_graph_has_planted_groups,
            declared_task_type=lambda spec: "binary",
            files=_graph_files,
            load=_graph_load,
        ),
    )
}


def dataset_kind(name: str) -> DatasetKind:
    """The registered kind ``name``; ValueError naming the known kinds otherwise."""
    if name not in DATASET_KINDS:
        raise ValueError(
            f"dataset.kind = {name!r} is not supported; expected one of {list(DATASET_KINDS)}"
        )
    return DATASET_KINDS[name]


def dataset_decisions(
    kind: str, spec, examples: pd.DataFrame, tasks: pd.DataFrame
) -> pd.DataFrame:
    """What the preparation decided for the user, as the long run_decisions table (schema
    :data:`taskgroup.data.tables.RUN_DECISIONS`): the kind, the features the network
    takes (the examples table's columns), the tasks kept (tasks table order), those left
    out by ``spec.exclude_tasks`` (every kind's spec has it) and the task types.
    ``examples`` and ``tasks``: the tables ``dataset_kind(kind).load(spec)`` returned."""
    rows = [("dataset_kind", kind)]
    rows += [("feature", column) for column in feature_columns(examples)]
    rows += [("task", task) for task in tasks.sort_values("task_index")["task"]]
    rows += [("excluded_task", normalize_task_name(task)) for task in spec.exclude_tasks]
    rows += [("task_type", task_type) for task_type in pd.unique(tasks["task_type"])]
    return pd.DataFrame(rows, columns=["item", "value"]).astype(str)
