import numpy as np
import pandas as pd
import pytest

from taskgroup.data.datasets import DATASET_KINDS, DataError
from taskgroup.data.datasets.graph_generator import GraphCommunitySpec, generate_graph
from taskgroup.data.datasets.graph_tasks import (
    graph_dataset,
    normalized_adjacency,
    propagate_features,
)
from taskgroup.data.tables import EXAMPLES, TASKS, check_columns, feature_columns

GRAPH = DATASET_KINDS["graph_communities"]


def section_n_tasks(section: dict) -> int:
    return GRAPH.n_tasks(GRAPH.spec(section))


def section_dataset(section: dict):
    return GRAPH.load(GRAPH.spec(section))


def section_has_planted_groups(section: dict) -> bool:
    return GRAPH.has_planted_groups(GRAPH.spec(section))


def tiny_spec(**overrides) -> GraphCommunitySpec:
    values = dict(n_blocks=2, communities_per_block=2, nodes_per_community=15, n_features=4,
                  seed=0)
    values.update(overrides)
    return GraphCommunitySpec(**values)


def write_graph(tmp_path, spec, suffix=".parquet"):
    edges, nodes = generate_graph(spec)
    edges_path, nodes_path = tmp_path / f"edges{suffix}", tmp_path / f"nodes{suffix}"
    for frame, path in ((edges, edges_path), (nodes.drop(columns="block"), nodes_path)):
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
    return edges_path, nodes_path


def test_same_seed_same_tables_byte_for_byte(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        examples, tasks = graph_dataset(tiny_spec(seed=seed))
        examples.to_parquet(tmp_path / f"{name}_examples.parquet", index=False)
        tasks.to_parquet(tmp_path / f"{name}_tasks.parquet", index=False)
        edges, nodes = generate_graph(tiny_spec(seed=seed))
        edges.to_parquet(tmp_path / f"{name}_edges.parquet", index=False)
    for table in ("examples", "tasks", "edges"):
        first = (tmp_path / f"a_{table}.parquet").read_bytes()
        assert first == (tmp_path / f"b_{table}.parquet").read_bytes()
    other = (tmp_path / "c_examples.parquet").read_bytes()
    assert other != (tmp_path / "a_examples.parquet").read_bytes()


def test_communities_nest_in_blocks_and_edges_follow_the_partition():
    spec = tiny_spec(n_blocks=3, communities_per_block=2, nodes_per_community=30,
                     p_community=0.5, p_block=0.1, p_across=0.0)
    edges, nodes = generate_graph(spec)
    membership = nodes[[c for c in nodes.columns if c.startswith("community_")]]
    assert list(membership.columns) == [f"community_{i}" for i in range(6)]
    assert (membership.sum(axis=1) == 1).all()  # disjoint communities cover every node
    for index, column in enumerate(membership.columns):
        members = nodes.loc[membership[column] == 1]
        assert len(members) == 30
        assert (members["block"] == index // 2).all()  # community inside its block
    block = nodes.set_index("node")["block"]
    assert (block[edges["source"]].to_numpy() == block[edges["target"]].to_numpy()).all()
    assert (edges["source"] < edges["target"]).all()
    _, tasks = graph_dataset(spec)
    assert tasks["planted_group"].tolist() == [0, 0, 1, 1, 2, 2]


def test_propagation_matches_a_dense_hand_computation():
    # path 0-1-2 plus the isolated node 3; a duplicate, a reversed copy and a self-loop
    sources, targets = np.array([0, 1, 1, 2, 3]), np.array([1, 2, 0, 1, 3])
    features = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0], [5.0, -1.0]])
    adjacency = np.array(
        [[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=float
    ) + np.eye(4)
    inv_sqrt = np.diag(1 / np.sqrt(adjacency.sum(axis=1)))
    dense = inv_sqrt @ adjacency @ inv_sqrt
    sparse = normalized_adjacency(sources, targets, 4)
    np.testing.assert_allclose(sparse.toarray(), dense)
    expected_last = dense @ dense @ features
    np.testing.assert_allclose(propagate_features(sparse, features, 2, "last"), expected_last)
    np.testing.assert_allclose(
        propagate_features(sparse, features, 2, "concat"),
        np.hstack([features, dense @ features, expected_last]),
    )
    np.testing.assert_allclose(propagate_features(sparse, features, 2)[3], [5, -1] * 3)


def test_tables_follow_the_schemas_with_one_row_per_node_and_task():
    spec = tiny_spec(hops=2)
    examples, tasks = graph_dataset(spec)
    check_columns(examples, EXAMPLES, "examples")
    check_columns(tasks, TASKS, "tasks")
    assert len(examples) == spec.n_tasks * spec.n_nodes
    assert len(feature_columns(examples)) == 3 * spec.n_features  # concat of hops 0, 1, 2
    assert examples[feature_columns(examples)].dtypes.eq(np.float32).all()
    assert examples["label"].dtype == np.float32
    assert tasks["task_index"].tolist() == list(range(spec.n_tasks))
    counts = examples.groupby(["task", "split"]).size().unstack()
    indexed = tasks.set_index("task")
    for split in ("train", "val", "test"):
        assert (counts[split] == indexed[f"n_{split}"]).all()
    positives = examples.groupby("task")["label"].sum()
    assert (positives == spec.nodes_per_community).all()


def test_stratified_splits_hold_both_classes_in_every_split():
    examples, _ = graph_dataset(tiny_spec(nodes_per_community=5))
    classes = examples.groupby(["task", "split"])["label"].nunique()
    assert len(classes) == 4 * 3 and (classes == 2).all()
    shares = examples.groupby("split").size() / len(examples)
    assert shares["train"] == pytest.approx(0.2, abs=0.05)
    assert shares["val"] == pytest.approx(0.2, abs=0.05)
    with pytest.raises(DataError, match="community_0.*too few"):
        graph_dataset(tiny_spec(nodes_per_community=3, train_fraction=0.5, val_fraction=0.4))


def test_user_graph_round_trip_equals_the_generator(tmp_path):
    spec = tiny_spec()
    edges_path, nodes_path = write_graph(tmp_path, spec, ".csv")
    section = {"edges_path": str(edges_path), "nodes_path": str(nodes_path),
               "community_groups": {f"community_{i}": i // 2 for i in range(4)}}
    assert section_n_tasks(section) == 4
    examples, tasks = section_dataset(section)
    expected_examples, expected_tasks = graph_dataset(spec)
    pd.testing.assert_frame_equal(examples, expected_examples, check_exact=False, atol=1e-5)
    pd.testing.assert_frame_equal(tasks, expected_tasks)
    generator_section = {"n_blocks": 2, "communities_per_block": 3}
    assert section_n_tasks(generator_section) == 6
    _, plain = section_dataset({"edges_path": str(edges_path), "nodes_path": str(nodes_path)})
    assert plain["planted_group"].isna().all()


def test_unknown_nodes_in_the_edge_table_are_named(tmp_path):
    edges_path, nodes_path = write_graph(tmp_path, tiny_spec(), ".csv")
    edges = pd.read_csv(edges_path)
    edges.loc[:6, "target"] = [900, 901, 902, 903, 904, 905, 906]
    edges.to_csv(edges_path, index=False)
    section = {"edges_path": str(edges_path), "nodes_path": str(nodes_path)}
    with pytest.raises(DataError) as error:
        section_dataset(section)
    message = str(error.value)
    assert str(edges_path) in message and "'target'" in message and "7 node id(s)" in message
    assert "'900', '901', '902', '903', '904', ..." in message and "'905'" not in message


def test_user_graph_errors_name_the_file_and_the_column(tmp_path):
    edges_path, nodes_path = write_graph(tmp_path, tiny_spec())
    section = {"edges_path": str(edges_path), "nodes_path": str(nodes_path)}
    pd.read_parquet(edges_path).rename(columns={"target": "dst"}).to_parquet(edges_path)
    with pytest.raises(DataError, match=r"edges\.parquet: missing column\(s\) \['target'\]"):
        section_dataset(section)

    edges_path, nodes_path = write_graph(tmp_path, tiny_spec())
    nodes = pd.read_parquet(nodes_path)
    nodes.loc[[2, 5], "feature_001"] = np.nan
    nodes.to_parquet(nodes_path)
    with pytest.raises(DataError, match=r"nodes\.parquet: NaN .*\['feature_001'\], 2 node"):
        section_dataset(section)

    with pytest.raises(DataError, match="both user-graph key"):
        section_dataset({**section, "n_blocks": 2})
    with pytest.raises(DataError, match="unknown key"):
        section_n_tasks({"n_blockz": 2})


def test_planted_groups_only_when_known():
    assert section_has_planted_groups({})
    files = {"edges_path": "e.csv", "nodes_path": "n.csv"}
    assert not section_has_planted_groups(files)
    assert section_has_planted_groups({**files, "community_groups": {"community_a": 0}})
