"""Graph community tasks (KDD 2023, Li, Zhang et al.: boosting multitask learning on graphs).

Each community of a graph is one binary task: "is this node a member?". Every node is an
example of every task, labelled by its membership. The shared trunk sees each node through
SGC-style propagated features, computed once here, so the rest of the pipeline (a plain MLP
on the examples table) is unchanged. The graph is drawn by
:mod:`taskgroup.data.datasets.graph_generator` or read by
:mod:`taskgroup.data.datasets.graph_files`.

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
every split (:func:`taskgroup.data.datasets.splits.stratified_split`). The defaults
0.2 / 0.2 / 0.6 follow the KDD'23 reference code.

Errors in the user's data or in the settings raise
:class:`taskgroup.data.datasets.errors.DataError`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from taskgroup.data.datasets.errors import DataError
from taskgroup.data.datasets.graph_files import (
    COMMUNITY_PREFIX,
    GraphFilesSpec,
    community_groups,
    load_graph,
)
from taskgroup.data.datasets.graph_generator import (
    SHARED_KEYS,
    GraphCommunitySpec,
    community_tasks,
    generate_graph,
)
from taskgroup.data.datasets.splits import TooFewToSplit, stratified_split
from taskgroup.data.tables import FEATURE_PREFIX, SPLITS, tasks_table

PROPAGATIONS = ("concat", "last")


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


def community_tables(
    edges: pd.DataFrame,
    features: np.ndarray,
    membership: pd.DataFrame,
    *,
    hops: int,
    propagation: str,
    standardize: bool,
    train_fraction: float,
    val_fraction: float,
    seed: int,
    groups: dict[str, int] | None,
    tasks: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The examples and tasks tables of the community tasks (schemas in taskgroup.data.tables).

    edges: DataFrame[source, target], node positions 0..n-1 (undirected; duplicates and
    self-loops collapse); features: raw node features (n x p);
    membership: n rows, one 0/1 column per community (the column name is the task name);
    groups: planted group of each task (None: planted_group is null);
    tasks: the membership columns that become tasks, in membership order (None: all);
    a task's split is seeded by its column's position in ``membership``, so leaving
    communities out changes no other task.
    Examples are ordered by task, then split (train, val, test), then node.
    Raises DataError on bad fractions, propagation or hops, and when a community has too
    few members or non-members for one of each in every split.
    """
    if not 0 < train_fraction < 1 or not 0 < val_fraction < 1 or (
        train_fraction + val_fraction >= 1
    ):
        raise DataError(
            f"train_fraction = {train_fraction}, val_fraction = {val_fraction}: each must be "
            "in (0, 1) and their sum below 1 (test gets the rest)"
        )
    adjacency = normalized_adjacency(edges["source"], edges["target"], len(membership))
    propagated = propagate_features(adjacency, features, hops, propagation)
    if standardize:
        spread = propagated.std(axis=0)
        propagated = (propagated - propagated.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    propagated = propagated.astype(np.float32)
    columns = [f"{FEATURE_PREFIX}{i:03d}" for i in range(propagated.shape[1])]
    split_rank = {name: rank for rank, name in enumerate(SPLITS)}

    frames, counts = [], []
    chosen = set(membership.columns if tasks is None else tasks)
    for task_index, task in enumerate(membership.columns):
        if task not in chosen:
            continue
        labels = membership[task].to_numpy(dtype=np.int64)
        rng = np.random.default_rng([seed, task_index])
        try:
            split = stratified_split(
                labels, train_fraction, val_fraction, rng, values=(0, 1), min_per_split=1
            )
        except TooFewToSplit as error:
            kind = "members" if error.value == 1 else "non-members"
            raise DataError(
                f"community {task!r} has {error.size} {kind}: too few for a train / val / test "
                "split with each class in every split (need at least 3)"
            ) from None
        order = np.lexsort((np.arange(len(labels)), np.vectorize(split_rank.get)(split)))
        frame = pd.DataFrame(propagated[order], columns=columns)
        frame.insert(0, "split", split[order].astype(str))
        frame.insert(0, "task", task)
        frame["label"] = labels[order].astype(np.float32)
        frames.append(frame)
        counts.append([int((split == name).sum()) for name in SPLITS])
    examples = pd.concat(frames, ignore_index=True)
    names = [task for task in membership.columns if task in chosen]
    planted = None if groups is None else [groups[task] for task in names]
    return examples, tasks_table(names, "binary", counts, planted)


def graph_dataset(spec: GraphCommunitySpec | GraphFilesSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The examples and tasks tables of a generated graph (planted_group = block) or of a
    user graph (planted_group from ``community_groups``, else null).

    Raises DataError on any problem of the graph or the settings.
    """
    options = {key: getattr(spec, key) for key in SHARED_KEYS if key != "exclude_tasks"}
    every_community, tasks = community_tasks(spec)
    if isinstance(spec, GraphCommunitySpec):
        edges, nodes = generate_graph(spec)
        features = nodes[[c for c in nodes.columns if c.startswith(FEATURE_PREFIX)]].to_numpy()
        membership = nodes[[c for c in nodes.columns if c.startswith(COMMUNITY_PREFIX)]]
        groups = {task: i // spec.communities_per_block for i, task in enumerate(membership)}
    else:
        edges, features, membership = load_graph(
            spec.edges_path, spec.nodes_path, spec.feature_columns, spec.community_columns
        )
        groups = community_groups(spec.community_groups, tasks, every_community)
    return community_tables(
        edges, features, membership, groups=groups, tasks=tasks, **options
    )
