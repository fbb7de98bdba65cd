"""A synthetic graph for graph community tasks: a nested planted partition (stochastic block
model).

There are ``n_blocks`` blocks, each made of ``communities_per_block`` disjoint communities of
``nodes_per_community`` nodes, so n = n_blocks * communities_per_block * nodes_per_community
nodes and k = n_blocks * communities_per_block tasks. Each unordered node pair is joined
independently, with probability ``p_community`` when both nodes are in one community,
``p_block`` when they are in different communities of one block, ``p_across`` otherwise.

Node features: node v of community c in block b has
``x_v = block_signal * u_b + community_signal * w_c + feature_noise * e_v`` with u_b, w_c, e_v
independent standard normal vectors of dimension ``n_features``. With noise well above the
signals one node's own features say little about its community; averaging over its
neighbours (mostly in its own community, then its own block) removes most of the noise,
which is why propagation matters. The block is each community's planted group: communities
of one block share u_b and most of their cross-community edges.

The graph becomes the community tasks' tables in :mod:`taskgroup.data.datasets.graph_tasks`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from taskgroup.data.datasets.errors import DataError
from taskgroup.data.datasets.graph_files import COMMUNITY_PREFIX, GraphFilesSpec, node_columns
from taskgroup.data.datasets.task_selection import kept_tasks
from taskgroup.data.tables import FEATURE_PREFIX


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
    exclude_tasks: communities (names as in the node table, community_0..) that are not
        made tasks; the graph, the features and the other tasks' splits stay the same.
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
    exclude_tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude_tasks", tuple(self.exclude_tasks))

    @property
    def n_tasks(self) -> int:
        """Communities the generator draws (exclude_tasks included)."""
        return self.n_blocks * self.communities_per_block

    @property
    def n_nodes(self) -> int:
        return self.n_tasks * self.nodes_per_community


SHARED_KEYS = (
    "hops", "propagation", "standardize", "train_fraction", "val_fraction", "seed",
    "exclude_tasks",
)
GENERATOR_KEYS = tuple(f.name for f in fields(GraphCommunitySpec) if f.name not in SHARED_KEYS)


def _community_names(n: int) -> list[str]:
    width = len(str(n - 1))
    return [f"{COMMUNITY_PREFIX}{i:0{width}d}" for i in range(n)]


def community_tasks(spec: GraphCommunitySpec | GraphFilesSpec) -> tuple[list[str], list[str]]:
    """(every community, the communities that become tasks): the generator's
    community_0.., or the node table's community columns (read from its header), and those
    of them that ``exclude_tasks`` does not leave out. DataError for a name that is not a
    community."""
    if isinstance(spec, GraphCommunitySpec):
        communities = _community_names(spec.n_tasks)
        where = ""
        source = "the generated graph (community_0.. of n_blocks x communities_per_block)"
    else:
        _, communities = node_columns(spec.nodes_path, spec.feature_columns, spec.community_columns)
        where, source = f"{spec.nodes_path}: ", "the node table (community columns)"
    kept = kept_tasks(communities, spec.exclude_tasks, "dataset.graph_communities", where, source)
    return communities, kept


def generate_graph(spec: GraphCommunitySpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw the graph and its raw node features (model in the module docstring).

    Returns
    -------
    edges : DataFrame[source, target] (int64 node ids, source < target, sorted).
    nodes : DataFrame[node, block, feature_000.., community_00..]: one row per node, its
        block, its raw (unpropagated) features (float32) and one 0/1 (int8) membership
        column per community, in block order (communities b*c .. b*c + c - 1 are block b's).
        It is a valid node table for
        :func:`taskgroup.data.datasets.graph_files.load_graph`.
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
