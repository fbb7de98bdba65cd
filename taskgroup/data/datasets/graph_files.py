"""A user's graph: the edge and node tables of graph community tasks (``dataset.kind:
graph_communities`` with ``edges_path`` + ``nodes_path``).

- Edge table (Parquet ``.parquet``/``.pq`` or ``.csv``): columns ``source`` and ``target``,
  node ids; undirected (either direction, duplicates and self-loops are dropped).
- Node table (Parquet or CSV), one row per node: a ``node`` column of unique ids; feature
  columns (default: every column whose name starts with ``feature_``; numeric, no NaN);
  one 0/1 membership column per community (default: every column whose name starts with
  ``community_``). A node may belong to several communities or to none. The task name is
  the membership column's name. Node ids are matched between the tables as text, a whole
  number as its digits, so an id stored as 7 in one file and as "7" or 7.0 (a number
  column with an empty cell) in the other is one node.

The graph becomes the community tasks' tables in :mod:`taskgroup.data.datasets.graph_tasks`.
Every problem raises :class:`DataError` naming the file and the column.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from taskgroup.data.datasets.errors import DataError
from taskgroup.data.datasets.files import read_header, read_rows
from taskgroup.data.datasets.task_selection import normalize_task_name
from taskgroup.data.tables import FEATURE_PREFIX

COMMUNITY_PREFIX = "community_"
FILE_KEYS = ("edges_path", "nodes_path", "feature_columns", "community_columns",
             "community_groups")
_SHOWN = 5  # offending ids shown in an error message


@dataclass(frozen=True)
class GraphFilesSpec:
    """A user graph and how its community tasks are built (``dataset.graph_communities``).

    edges_path, nodes_path: the edge and node tables (module docstring).
    feature_columns, community_columns: the node table's feature and 0/1 membership columns
        (None: the columns named feature_* resp. community_*).
    community_groups: community column -> its known group (the planted_group), every
        community and only them; None: no known groups.
    hops, propagation, standardize, train_fraction, val_fraction, seed, exclude_tasks: as in
        :class:`taskgroup.data.datasets.graph_generator.GraphCommunitySpec`.
    """

    edges_path: str
    nodes_path: str
    feature_columns: tuple[str, ...] | None
    community_columns: tuple[str, ...] | None
    community_groups: dict[str, int] | None
    hops: int
    propagation: str
    standardize: bool
    train_fraction: float
    val_fraction: float
    seed: int
    exclude_tasks: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude_tasks", tuple(self.exclude_tasks))


def _kind(path: Path, what: str) -> str:
    if not path.exists():
        raise DataError(f"{path}: {what} file not found")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise DataError(f"{path}: {what} file must end in .parquet, .pq or .csv")


def _read(path: str | os.PathLike, what: str, require_rows: bool = True) -> pd.DataFrame:
    path = Path(path)
    return read_rows(path, _kind(path, what), require_rows=require_rows)


def _header(path: str | os.PathLike, what: str) -> list[str]:
    path = Path(path)
    return read_header(path, _kind(path, what))


def _shown(values) -> str:
    values = list(values)
    return ", ".join(repr(v) for v in values[:_SHOWN]) + (", ..." if len(values) > _SHOWN else "")


# What to do about a graph without node features (community data often has none): the
# propagation [X, SX, S^2 X] needs at least one input column to carry the structure.
NO_FEATURES_HINT = (
    "; a graph without node attributes needs at least one: add a column to the node table, "
    "e.g. feature_degree = the node's number of edges in the edge table (or its logarithm), "
    "or a constant feature_one = 1; the propagation (hops) then turns it into features of "
    "each node's neighbourhood. Or name existing numeric columns in "
    "dataset.graph_communities.feature_columns"
)


def _pick_columns(columns: list[str], chosen: Sequence[str] | None, prefix: str, what: str,
                  path: Path) -> list[str]:
    if chosen is None:
        picked = [c for c in columns if str(c).startswith(prefix)]
        if not picked:
            raise DataError(
                f"{path}: no {what} columns (names starting with {prefix!r}); found columns "
                f"{list(columns)}" + (NO_FEATURES_HINT if what == "feature" else "")
            )
        return picked
    missing = [c for c in chosen if c not in columns]
    if missing:
        raise DataError(
            f"{path}: {what} column(s) {missing} not found; found columns {list(columns)}"
        )
    if not chosen:
        raise DataError(f"{path}: the list of {what} columns is empty")
    return list(chosen)


def node_columns(nodes_path: str | os.PathLike, feature_columns: Sequence[str] | None = None,
                 community_columns: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """The feature and community columns of a node table (from its header only)."""
    columns = _header(nodes_path, "node table")
    path = Path(nodes_path)
    features = _pick_columns(columns, feature_columns, FEATURE_PREFIX, "feature", path)
    communities = _pick_columns(columns, community_columns, COMMUNITY_PREFIX, "community", path)
    overlap = sorted(set(features) & set(communities))
    if overlap:
        raise DataError(f"{path}: column(s) {overlap} are both feature and community columns")
    return features, communities


def load_graph(
    edges_path: str | os.PathLike,
    nodes_path: str | os.PathLike,
    feature_columns: Sequence[str] | None = None,
    community_columns: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Read and check a user graph (formats in the module docstring).

    Returns
    -------
    edges : DataFrame[source, target] (int64): each edge's ends as row positions of the node
        table (as given: either direction, duplicates and self-loops kept).
    features : (n, p) float64, the raw features of the node table's n rows.
    membership : n rows, one 0/1 int8 column per community (the column name is the task).
    Raises DataError naming the file and the column on any problem.
    """
    edges_path, nodes_path = Path(edges_path), Path(nodes_path)
    features_used, communities = node_columns(nodes_path, feature_columns, community_columns)
    nodes = _read(nodes_path, "node table")
    if "node" not in nodes.columns:
        raise DataError(
            f"{nodes_path}: missing column 'node' (node ids); found columns {list(nodes.columns)}"
        )
    if nodes["node"].isna().any():
        raise DataError(f"{nodes_path}: column 'node' has {int(nodes['node'].isna().sum())} "
                        "empty value(s)")
    ids = nodes["node"].map(normalize_task_name).astype(str)
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        raise DataError(
            f"{nodes_path}: column 'node' repeats {len(duplicated)} id(s): {_shown(duplicated)}"
        )

    for column in features_used:
        if not pd.api.types.is_numeric_dtype(nodes[column]) or pd.api.types.is_bool_dtype(
            nodes[column]
        ):
            raise DataError(
                f"{nodes_path}: feature column {column!r} has dtype {nodes[column].dtype}, "
                "expected numbers"
            )
    features = nodes[features_used].to_numpy(dtype=np.float64)
    bad_rows = ~np.isfinite(features).all(axis=1)
    if bad_rows.any():
        bad_columns = [c for c, ok in zip(features_used, np.isfinite(features).all(axis=0))
                       if not ok]
        raise DataError(
            f"{nodes_path}: NaN or infinite values in feature column(s) {bad_columns}, "
            f"{int(bad_rows.sum())} node(s): {_shown(ids[bad_rows])}"
        )

    membership = {}
    for column in communities:
        values = nodes[column]
        if values.isna().any() or not values.isin([0, 1]).all():
            bad = ids[values.isna() | ~values.isin([0, 1])]
            raise DataError(
                f"{nodes_path}: community column {column!r} must hold 0 or 1; {len(bad)} "
                f"node(s) have other or missing values: {_shown(bad)}"
            )
        membership[column] = values.astype(np.int8).to_numpy()
    membership = pd.DataFrame(membership, columns=communities)

    edges = _read(edges_path, "edge table", require_rows=False)  # no edges: features only
    missing = [c for c in ("source", "target") if c not in edges.columns]
    if missing:
        raise DataError(
            f"{edges_path}: missing column(s) {missing}; expected columns ['source', 'target'], "
            f"found {list(edges.columns)}"
        )
    position = pd.Series(np.arange(len(ids)), index=ids.to_numpy())
    ends = []
    problems = []
    for column in ("source", "target"):
        empty = edges[column].isna()
        if empty.any():
            problems.append(f"column {column!r} has {int(empty.sum())} empty value(s)")
            continue
        text = edges[column].map(normalize_task_name).astype(str)
        unknown = text[~text.isin(position.index)].unique()
        if len(unknown):
            problems.append(
                f"column {column!r} names {len(unknown)} node id(s) not in {nodes_path} "
                f"(column 'node'): {_shown(unknown)}"
            )
            continue
        ends.append(position.loc[text.to_numpy()].to_numpy())
    if problems:
        raise DataError(f"{edges_path}: " + "; ".join(problems))
    edges = pd.DataFrame({"source": ends[0], "target": ends[1]}, dtype="int64")
    return edges, features, membership


def community_groups(
    groups: dict[str, int] | None, communities: Sequence[str],
    every_community: Sequence[str] | None = None,
) -> dict[str, int] | None:
    """The known group of every community of ``communities`` (the tasks), in that order
    (None stays None).

    Raises DataError when ``groups`` misses one of them or names a community that is not
    one of ``every_community`` (default ``communities``; a community left out of the
    tasks may keep its group).
    """
    if groups is None:
        return None
    known = communities if every_community is None else every_community
    missing = [c for c in communities if c not in groups]
    extra = sorted(set(groups) - set(known))
    if missing or extra:
        raise DataError(
            "dataset.graph_communities.community_groups must give a group to every "
            f"community and only to them; missing {missing}, unknown {extra}"
        )
    return {c: int(groups[c]) for c in communities}
