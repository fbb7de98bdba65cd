"""Graph community tasks (KDD 2023, Li, Zhang et al.: boosting multitask learning on graphs).

Each community of a graph is one binary task: "is this node a member?". Every node is an
example of every task, labelled by its membership. The shared trunk sees each node through
SGC-style propagated features, computed once here, so the rest of the pipeline (a plain MLP
on the examples table) is unchanged.

Synthetic generator (:class:`GraphCommunitySpec`, :func:`generate_graph`)
-------------------------------------------------------------------------
A nested planted partition (stochastic block model). There are ``n_blocks`` blocks, each
made of ``communities_per_block`` disjoint communities of ``nodes_per_community`` nodes, so
n = n_blocks * communities_per_block * nodes_per_community nodes and
k = n_blocks * communities_per_block tasks. Each unordered node pair is joined independently,
with probability ``p_community`` when both nodes are in one community, ``p_block`` when they
are in different communities of one block, ``p_across`` otherwise.

Node features: node v of community c in block b has
``x_v = block_signal * u_b + community_signal * w_c + feature_noise * e_v`` with u_b, w_c, e_v
independent standard normal vectors of dimension ``n_features``. With noise well above the
signals one node's own features say little about its community; averaging over its
neighbours (mostly in its own community, then its own block) removes most of the noise,
which is why propagation matters. The block is each community's planted group: communities
of one block share u_b and most of their cross-community edges.

User graph (:func:`load_graph`)
-------------------------------
- Edge table (Parquet ``.parquet``/``.pq`` or ``.csv``): columns ``source`` and ``target``,
  node ids; undirected (either direction, duplicates and self-loops are dropped).
- Node table (Parquet or CSV), one row per node: a ``node`` column of unique ids; feature
  columns (default: every column whose name starts with ``feature_``; numeric, no NaN);
  one 0/1 membership column per community (default: every column whose name starts with
  ``community_``). A node may belong to several communities or to none. The task name is
  the membership column's name. Node ids are matched between the tables as text, so an id
  stored as 7 in one file and "7" in the other is one node.

Propagation (:func:`normalized_adjacency`, :func:`propagate_features`)
---------------------------------------------------------------------
S = D^-1/2 (A + I) D^-1/2 with A the symmetric 0/1 adjacency and D the degrees of A + I.
``propagation: concat`` (the default, SIGN-style as in the KDD'23 reference code) emits
[X, SX, ..., S^hops X]; ``propagation: last`` emits S^hops X only (SGC). Feature columns
are named feature_000.. in that order (hop-major, the input columns' order within a hop).
With ``standardize`` (default) every output column is z-scored over all nodes (transductive:
the features of every node are known, only the labels are split).

Splits: for each task separately, the members and the non-members are each shuffled
(seeded by the seed and the task index) and cut into train / val / test by
``train_fraction`` / ``val_fraction`` / the rest, with at least one node of each class in
every split. The defaults 0.2 / 0.2 / 0.6 follow the KDD'23 reference code.

Config (``dataset.graph_communities``; :func:`graph_dataset`, :func:`graph_n_tasks`): either
the generator keys (the fields of :data:`GENERATOR_KEYS`) or ``edges_path`` + ``nodes_path``
(+ ``feature_columns``, ``community_columns``, ``community_groups``), plus the shared keys
``hops``, ``propagation``, ``standardize``, ``train_fraction``, ``val_fraction``, ``seed``.

Errors in the user's data or in the section raise :class:`DataError` (a ValueError), the one
of :mod:`taskgroup.data.datasets.table`, so a caller catches one exception for every user dataset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from taskgroup.data.datasets.table import DataError
from taskgroup.data.tables import FEATURE_PREFIX, SPLITS

__all__ = [
    "DataError",
    "GraphCommunitySpec",
    "community_tables",
    "generate_graph",
    "generated_dataset",
    "graph_dataset",
    "graph_has_planted_groups",
    "graph_n_tasks",
    "graph_spec",
    "load_graph",
    "normalized_adjacency",
    "propagate_features",
]

COMMUNITY_PREFIX = "community_"
PROPAGATIONS = ("concat", "last")
_SHOWN = 5  # offending ids shown in an error message


@dataclass(frozen=True)
class GraphCommunitySpec:
    """Knobs of the nested planted-partition generator (model in the module docstring).

    n_blocks, communities_per_block: k = n_blocks * communities_per_block tasks.
    nodes_per_community: nodes of each (disjoint) community.
    p_community, p_block, p_across: edge probability of a node pair in one community, in
        different communities of one block, in different blocks.
    n_features: dimension of the raw node features.
    block_signal, community_signal: scale of the block mean and of the community offset.
    feature_noise: standard deviation of each node's own noise.
    hops: propagation steps; propagation: "concat" ([X, SX, .., S^hops X]) or "last".
    standardize: z-score every propagated feature column over the nodes.
    train_fraction, val_fraction: per-task, per-class share of nodes in train and val
        (test gets the rest).
    seed: seed of the graph, the features and the splits.
    """

    n_blocks: int = 4
    communities_per_block: int = 3
    nodes_per_community: int = 50
    p_community: float = 0.1
    p_block: float = 0.03
    p_across: float = 0.01
    n_features: int = 16
    block_signal: float = 1.0
    community_signal: float = 1.0
    feature_noise: float = 4.0
    hops: int = 2
    propagation: str = "concat"
    standardize: bool = True
    train_fraction: float = 0.2
    val_fraction: float = 0.2
    seed: int = 0

    @property
    def n_tasks(self) -> int:
        return self.n_blocks * self.communities_per_block

    @property
    def n_nodes(self) -> int:
        return self.n_tasks * self.nodes_per_community


SHARED_KEYS = ("hops", "propagation", "standardize", "train_fraction", "val_fraction", "seed")
GENERATOR_KEYS = tuple(f.name for f in fields(GraphCommunitySpec) if f.name not in SHARED_KEYS)
FILE_KEYS = ("edges_path", "nodes_path", "feature_columns", "community_columns",
             "community_groups")


# ----------------------------------------------------------------------------- generator


def _community_names(n: int) -> list[str]:
    width = len(str(n - 1))
    return [f"{COMMUNITY_PREFIX}{i:0{width}d}" for i in range(n)]


def generate_graph(spec: GraphCommunitySpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw the graph and its raw node features (model in the module docstring).

    Returns
    -------
    edges : DataFrame[source, target] (int64 node ids, source < target, sorted).
    nodes : DataFrame[node, block, feature_000.., community_00..]: one row per node, its
        block, its raw (unpropagated) features (float32) and one 0/1 (int8) membership
        column per community, in block order (communities b*c .. b*c + c - 1 are block b's).
        It is a valid node table for :func:`load_graph`.
    """
    if spec.n_blocks < 1 or spec.communities_per_block < 1 or spec.nodes_per_community < 3:
        raise DataError(
            "graph generator: need n_blocks >= 1, communities_per_block >= 1 and "
            f"nodes_per_community >= 3, got {spec.n_blocks}, {spec.communities_per_block}, "
            f"{spec.nodes_per_community}"
        )
    rng = np.random.default_rng(spec.seed)
    n_comm, size = spec.n_tasks, spec.nodes_per_community
    block_of = np.arange(n_comm) // spec.communities_per_block

    sources, targets = [], []
    for a in range(n_comm):
        for b in range(a, n_comm):
            if a == b:
                p = spec.p_community
            elif block_of[a] == block_of[b]:
                p = spec.p_block
            else:
                p = spec.p_across
            hits = rng.random((size, size)) < p
            if a == b:
                hits = np.triu(hits, k=1)
            i, j = np.nonzero(hits)
            sources.append(a * size + i)
            targets.append(b * size + j)
    edges = pd.DataFrame(
        {"source": np.concatenate(sources), "target": np.concatenate(targets)}, dtype="int64"
    )
    edges = edges.sort_values(["source", "target"], ignore_index=True)

    block_means = rng.standard_normal((spec.n_blocks, spec.n_features)) * spec.block_signal
    offsets = rng.standard_normal((n_comm, spec.n_features)) * spec.community_signal
    community = np.repeat(np.arange(n_comm), size)
    noise = rng.standard_normal((spec.n_nodes, spec.n_features)) * spec.feature_noise
    features = block_means[block_of[community]] + offsets[community] + noise

    nodes = pd.DataFrame({"node": np.arange(spec.n_nodes, dtype=np.int64)})
    nodes["block"] = block_of[community].astype(np.int64)
    feature_frame = pd.DataFrame(
        features.astype(np.float32),
        columns=[f"{FEATURE_PREFIX}{i:03d}" for i in range(spec.n_features)],
    )
    membership = pd.DataFrame(
        (community[:, None] == np.arange(n_comm)[None, :]).astype(np.int8),
        columns=_community_names(n_comm),
    )
    nodes = pd.concat([nodes, feature_frame, membership], axis=1)
    return edges, nodes


# ----------------------------------------------------------------------------- propagation


def normalized_adjacency(
    sources: np.ndarray, targets: np.ndarray, n_nodes: int
) -> sp.csr_matrix:
    """S = D^-1/2 (A + I) D^-1/2 for the undirected graph with the given edges (node
    positions 0..n_nodes-1; either direction, duplicates and self-loops collapse)."""
    sources = np.asarray(sources, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    off_diagonal = sources != targets
    rows = np.concatenate([sources[off_diagonal], targets[off_diagonal]])
    cols = np.concatenate([targets[off_diagonal], sources[off_diagonal]])
    adjacency = sp.coo_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(n_nodes, n_nodes)
    ).tocsr()
    adjacency.data[:] = 1.0  # duplicate edges were summed by tocsr
    adjacency = adjacency + sp.identity(n_nodes, format="csr")
    inv_sqrt = 1.0 / np.sqrt(np.asarray(adjacency.sum(axis=1)).ravel())
    scale = sp.diags(inv_sqrt)
    return (scale @ adjacency @ scale).tocsr()


def propagate_features(
    adjacency: sp.spmatrix, features: np.ndarray, hops: int, propagation: str = "concat"
) -> np.ndarray:
    """[X, SX, .., S^hops X] (``"concat"``) or S^hops X (``"last"``), float64."""
    if propagation not in PROPAGATIONS:
        raise DataError(f"propagation = {propagation!r}; expected one of {list(PROPAGATIONS)}")
    if hops < 0:
        raise DataError(f"hops = {hops}; expected >= 0")
    current = np.asarray(features, dtype=np.float64)
    powers = [current]
    for _ in range(hops):
        current = adjacency @ current
        powers.append(current)
    return np.hstack(powers) if propagation == "concat" else powers[-1]


# ----------------------------------------------------------------------------- tables


def _stratified_splits(labels: np.ndarray, train_fraction: float, val_fraction: float,
                       rng: np.random.Generator, task: str) -> np.ndarray:
    """Split name per node: each class cut train / val / test, each split holding >= 1."""
    split = np.empty(len(labels), dtype=object)
    for value in (0, 1):
        members = np.flatnonzero(labels == value)
        n = len(members)
        n_train = max(1, int(round(train_fraction * n)))
        n_val = max(1, int(round(val_fraction * n)))
        if n - n_train - n_val < 1:
            kind = "members" if value == 1 else "non-members"
            raise DataError(
                f"community {task!r} has {n} {kind}: too few for a train / val / test split "
                "with each class in every split (need at least 3)"
            )
        order = rng.permutation(members)
        split[order[:n_train]] = "train"
        split[order[n_train : n_train + n_val]] = "val"
        split[order[n_train + n_val :]] = "test"
    return split


def community_tables(
    adjacency: sp.spmatrix,
    features: np.ndarray,
    membership: pd.DataFrame,
    *,
    hops: int,
    propagation: str = "concat",
    standardize: bool = True,
    train_fraction: float = 0.2,
    val_fraction: float = 0.2,
    seed: int = 0,
    groups: dict[str, int] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The examples and tasks tables of the community tasks (schemas in taskgroup.data.tables).

    adjacency: normalized adjacency S (n x n); features: raw node features (n x p);
    membership: n rows, one 0/1 column per community (the column name is the task name);
    groups: planted group of each community (None: planted_group is null).
    Examples are ordered by task, then split (train, val, test), then node.
    """
    if not 0 < train_fraction < 1 or not 0 < val_fraction < 1 or (
        train_fraction + val_fraction >= 1
    ):
        raise DataError(
            f"train_fraction = {train_fraction}, val_fraction = {val_fraction}: each must be "
            "in (0, 1) and their sum below 1 (test gets the rest)"
        )
    propagated = propagate_features(adjacency, features, hops, propagation)
    if standardize:
        spread = propagated.std(axis=0)
        propagated = (propagated - propagated.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    propagated = propagated.astype(np.float32)
    columns = [f"{FEATURE_PREFIX}{i:03d}" for i in range(propagated.shape[1])]
    split_rank = {name: rank for rank, name in enumerate(SPLITS)}

    frames, task_rows = [], []
    for task_index, task in enumerate(membership.columns):
        labels = membership[task].to_numpy(dtype=np.int64)
        rng = np.random.default_rng([seed, task_index])
        split = _stratified_splits(labels, train_fraction, val_fraction, rng, task)
        order = np.lexsort((np.arange(len(labels)), np.vectorize(split_rank.get)(split)))
        frame = pd.DataFrame(propagated[order], columns=columns)
        frame.insert(0, "split", split[order].astype(str))
        frame.insert(0, "task", task)
        frame["label"] = labels[order].astype(np.float32)
        frames.append(frame)
        counts = {name: int((split == name).sum()) for name in SPLITS}
        task_rows.append(
            {
                "task": task,
                "task_index": task_index,
                "task_type": "binary",
                "n_train": counts["train"],
                "n_val": counts["val"],
                "n_test": counts["test"],
                "planted_group": None if groups is None else groups[task],
            }
        )
    examples = pd.concat(frames, ignore_index=True)
    tasks = pd.DataFrame(task_rows).astype(
        {"task_index": "int64", "n_train": "int64", "n_val": "int64", "n_test": "int64"}
    )
    tasks["planted_group"] = tasks["planted_group"].astype("Int64")
    return examples, tasks


def generated_dataset(spec: GraphCommunitySpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Examples and tasks tables of the synthetic graph; planted_group = block."""
    edges, nodes = generate_graph(spec)
    adjacency = normalized_adjacency(edges["source"], edges["target"], spec.n_nodes)
    features = nodes[[c for c in nodes.columns if c.startswith(FEATURE_PREFIX)]].to_numpy()
    membership = nodes[[c for c in nodes.columns if c.startswith(COMMUNITY_PREFIX)]]
    groups = {task: i // spec.communities_per_block for i, task in enumerate(membership)}
    return community_tables(
        adjacency, features, membership, hops=spec.hops, propagation=spec.propagation,
        standardize=spec.standardize, train_fraction=spec.train_fraction,
        val_fraction=spec.val_fraction, seed=spec.seed, groups=groups,
    )


# ----------------------------------------------------------------------------- user graph


def _read(path: str | os.PathLike, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {what} file not found")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path)
    raise DataError(f"{path}: {what} file must end in .parquet, .pq or .csv")


def _header(path: str | os.PathLike, what: str) -> list[str]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {what} file not found")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if suffix == ".csv":
        return list(pd.read_csv(path, nrows=0).columns)
    raise DataError(f"{path}: {what} file must end in .parquet, .pq or .csv")


def _shown(values) -> str:
    values = list(values)
    return ", ".join(repr(v) for v in values[:_SHOWN]) + (", ..." if len(values) > _SHOWN else "")


def _pick_columns(columns: list[str], chosen: list[str] | None, prefix: str, what: str,
                  path: Path) -> list[str]:
    if chosen is None:
        picked = [c for c in columns if str(c).startswith(prefix)]
        if not picked:
            raise DataError(
                f"{path}: no {what} columns (names starting with {prefix!r}); found columns "
                f"{list(columns)}"
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


def node_columns(nodes_path: str | os.PathLike, feature_columns: list[str] | None = None,
                 community_columns: list[str] | None = None) -> tuple[list[str], list[str]]:
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
    feature_columns: list[str] | None = None,
    community_columns: list[str] | None = None,
) -> tuple[sp.csr_matrix, np.ndarray, pd.DataFrame]:
    """Read and check a user graph (formats in the module docstring).

    Returns the normalized adjacency S over the node table's rows, the raw features
    (n x p float64) and the membership table (n rows, one 0/1 int8 column per community).
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
    ids = nodes["node"].astype(str)
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

    edges = _read(edges_path, "edge table")
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
        text = edges[column].astype(str)
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
    adjacency = normalized_adjacency(ends[0], ends[1], len(ids))
    return adjacency, features, membership


# ----------------------------------------------------------------------------- config


def _check_section(section: dict) -> bool:
    """Raise DataError on unknown or mixed keys; True when the section names user files."""
    where = "dataset.graph_communities"
    known = set(SHARED_KEYS) | set(GENERATOR_KEYS) | set(FILE_KEYS)
    unknown = sorted(set(section) - known)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    file_keys = sorted(set(section) & set(FILE_KEYS))
    generator_keys = sorted(set(section) & set(GENERATOR_KEYS))
    if file_keys and generator_keys:
        raise DataError(
            f"{where}: has both user-graph key(s) {file_keys} and generator key(s) "
            f"{generator_keys}; give either edges_path + nodes_path or the generator keys"
        )
    if file_keys:
        missing = [k for k in ("edges_path", "nodes_path") if k not in section]
        if missing:
            raise DataError(f"{where}: missing key(s) {missing} (a user graph needs both)")
        return True
    return False


def graph_spec(section: dict) -> GraphCommunitySpec:
    """The generator spec of a ``dataset.graph_communities`` section (missing keys: defaults)."""
    return GraphCommunitySpec(**section)


def graph_n_tasks(section: dict) -> int:
    """The number of tasks k (communities) of a ``dataset.graph_communities`` section.

    For a user graph only the node table's header is read.
    """
    if _check_section(section):
        _, communities = node_columns(
            section["nodes_path"], section.get("feature_columns"),
            section.get("community_columns"),
        )
        return len(communities)
    return graph_spec(section).n_tasks


def graph_has_planted_groups(section: dict) -> bool:
    """Whether the tasks table will have planted groups: always for the generator (the
    blocks), for a user graph only when the section gives ``community_groups``."""
    if _check_section(section):
        return section.get("community_groups") is not None
    return True


def graph_dataset(section: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The examples and tasks tables of a ``dataset.graph_communities`` section."""
    if not _check_section(section):
        return generated_dataset(graph_spec(section))
    adjacency, features, membership = load_graph(
        section["edges_path"], section["nodes_path"], section.get("feature_columns"),
        section.get("community_columns"),
    )
    groups = section.get("community_groups")
    if groups is not None:
        missing = [c for c in membership.columns if c not in groups]
        extra = sorted(set(groups) - set(membership.columns))
        if missing or extra:
            raise DataError(
                "dataset.graph_communities.community_groups must give a group to every "
                f"community and only to them; missing {missing}, unknown {extra}"
            )
        groups = {c: int(groups[c]) for c in membership.columns}
    defaults = GraphCommunitySpec()
    options = {key: section.get(key, getattr(defaults, key)) for key in SHARED_KEYS}
    return community_tables(adjacency, features, membership, groups=groups, **options)
