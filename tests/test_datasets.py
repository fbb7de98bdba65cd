"""The registry of dataset kinds, the one stratified split and the one tasks-table builder."""

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from taskgroup.config import (
    ConfigError,
    dataset_files,
    declared_task_type,
    has_planted_groups,
    n_tasks,
)
from taskgroup.data.datasets import DATASET_KINDS, DataError, dataset_kind
from taskgroup.data.datasets.splits import TooFewToSplit, stratified_split
from taskgroup.data.tables import TASKS, check_columns, tasks_table

ROOT = Path(__file__).resolve().parents[1]


def schema_kinds() -> list[str]:
    schema = yaml.safe_load((ROOT / "config" / "config.schema.yaml").read_text())
    return schema["properties"]["dataset"]["properties"]["kind"]["enum"]


def test_registry_knows_exactly_the_kinds_the_schema_allows():
    assert sorted(DATASET_KINDS) == sorted(schema_kinds())
    for name, kind in DATASET_KINDS.items():
        assert kind.name == name
        assert dataset_kind(name) is kind
    with pytest.raises(ValueError, match=r"dataset.kind = 'planet' is not supported; expected "
                       r"one of \['planted', 'table', 'graph_communities'\]"):
        dataset_kind("planet")


def test_unknown_kind_is_a_config_error():
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["dataset"]["kind"] = "planet"
    with pytest.raises(ConfigError, match="'planet' is not supported"):
        n_tasks(config)


def test_config_questions_go_through_the_registry(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    planted = config["dataset"]
    assert n_tasks(config) == 30
    assert has_planted_groups(planted) and declared_task_type(planted) == "binary"
    assert dataset_files(planted) == []

    table_path = tmp_path / "data.csv"
    pd.DataFrame({"t": ["b", "a", "b"], "x": [1.0, 2.0, 3.0], "y": [0, 1, 0]}).to_csv(
        table_path, index=False
    )
    table = {"name": "t", "kind": "table",
             "table": {"path": str(table_path), "task_column": "t", "label_column": "y"}}
    assert n_tasks({"dataset": table}) == 2
    assert not has_planted_groups(table) and declared_task_type(table) is None
    assert dataset_files(table) == [str(table_path)]
    with_groups = copy.deepcopy(table)
    with_groups["table"].update(task_type="regression", groups_path="g.csv", group_column="g")
    assert has_planted_groups(with_groups) and declared_task_type(with_groups) == "regression"
    assert dataset_files(with_groups) == [str(table_path), "g.csv"]

    generated = {"name": "g", "kind": "graph_communities",
                 "graph_communities": {"n_blocks": 2, "communities_per_block": 2}}
    assert n_tasks({"dataset": generated}) == 4
    assert has_planted_groups(generated) and dataset_files(generated) == []
    nodes_path = tmp_path / "nodes.csv"
    pd.DataFrame({"node": [1, 2, 3], "feature_a": [0.0, 1.0, 2.0], "community_x": [0, 1, 1],
                  "community_y": [1, 0, 1], "community_z": [1, 1, 0]}).to_csv(
        nodes_path, index=False
    )
    files = {"name": "g", "kind": "graph_communities",
             "graph_communities": {"edges_path": "e.csv", "nodes_path": str(nodes_path),
                                   "community_columns": ["community_x", "community_z"]}}
    assert n_tasks({"dataset": files}) == 2
    assert not has_planted_groups(files) and declared_task_type(files) == "binary"
    assert dataset_files(files) == ["e.csv", str(nodes_path)]


def test_parse_time_imports_stay_light():
    # the config check runs when Snakemake parses the workflow: no torch, no scipy there
    code = (
        "import sys, taskgroup.config; "
        "print(sorted(m for m in ('torch', 'scipy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.stdout.strip() == "[]"


# --- the stratified split --------------------------------------------------------------------


def test_stratified_split_cuts_every_class_by_the_fractions():
    labels = np.array([0] * 10 + [1] * 5)
    split = stratified_split(labels, 0.6, 0.2, np.random.default_rng(7))
    counts = pd.crosstab(labels, split)
    # class 0: round(6.0), round(2.0), rest; class 1: round(3.0), round(1.0), rest
    assert counts.loc[0, ["train", "val", "test"]].tolist() == [6, 2, 2]
    assert counts.loc[1, ["train", "val", "test"]].tolist() == [3, 1, 1]


def test_stratified_split_is_seeded_and_draws_each_stratum_with_permutation():
    labels = np.array([1, 0, 0, 1, 0, 1, 0, 0])
    first = stratified_split(labels, 0.5, 0.25, np.random.default_rng(3))
    again = stratified_split(labels, 0.5, 0.25, np.random.default_rng(3))
    np.testing.assert_array_equal(first, again)
    # the same draw by hand: class 0 then class 1, each one permutation of its positions
    rng = np.random.default_rng(3)
    expected = np.empty(8, dtype=object)
    for members, n_train, n_val in ((np.array([1, 2, 4, 6, 7]), 2, 1), (np.array([0, 3, 5]), 2, 1)):
        order = rng.permutation(members)
        expected[order[:n_train]] = "train"
        expected[order[n_train : n_train + n_val]] = "val"
        expected[order[n_train + n_val :]] = "test"
    np.testing.assert_array_equal(first, expected)
    splits = {tuple(stratified_split(labels, 0.5, 0.25, np.random.default_rng(seed)))
              for seed in range(10)}
    assert len(splits) > 1


def test_one_stratum_is_a_plain_split_and_minimum_sizes_are_enforced():
    split = stratified_split(np.zeros(10), 0.6, 0.2, np.random.default_rng(0))
    assert [int((split == name).sum()) for name in ("train", "val", "test")] == [6, 2, 2]
    # three members: round(0.6) = 1 train, round(0.6) = 1 val, 1 test
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    split = stratified_split(labels, 0.2, 0.2, np.random.default_rng(0), min_per_split=1)
    assert sorted(split[labels == 1]) == ["test", "train", "val"]
    with pytest.raises(TooFewToSplit) as error:
        stratified_split(np.array([0, 0, 0, 1, 1]), 0.2, 0.2, np.random.default_rng(0),
                         min_per_split=1)
    assert (error.value.value, error.value.size) == (1, 2)
    assert isinstance(error.value, DataError)
    with pytest.raises(TooFewToSplit) as error:  # a listed value without entries
        stratified_split(np.zeros(6), 0.2, 0.2, np.random.default_rng(0), values=(0, 1),
                         min_per_split=1)
    assert (error.value.value, error.value.size) == (1, 0)


# --- the tasks table -------------------------------------------------------------------------


def test_tasks_table_follows_its_schema():
    table = tasks_table(["b", "a"], "binary", [[3, 2, 1], [6, 5, 4]], [1, 0])
    check_columns(table, TASKS, "tasks")
    assert list(table.columns) == list(TASKS)
    assert table["task"].tolist() == ["b", "a"] and table["task_index"].tolist() == [0, 1]
    assert table[["n_train", "n_val", "n_test"]].to_numpy().tolist() == [[3, 2, 1], [6, 5, 4]]
    assert table["planted_group"].tolist() == [1, 0]
    assert str(table["planted_group"].dtype) == "Int64"
    assert (table[["task_index", "n_train", "n_val", "n_test"]].dtypes == np.int64).all()
    plain = tasks_table(["x"], ["regression"], np.array([[4, 1, 1]]))
    assert plain["task_type"].tolist() == ["regression"]
    assert plain["planted_group"].isna().all() and str(plain["planted_group"].dtype) == "Int64"


# --- tasks left out by name: the same key and the same error for every kind ------------------


def excluding_sections(tmp_path) -> dict:
    """One small section per kind (a user graph from the generator's files)."""
    from taskgroup.data.datasets.graph_generator import GraphCommunitySpec, generate_graph

    generator = {"n_blocks": 2, "communities_per_block": 2, "nodes_per_community": 15,
                 "n_features": 4, "seed": 0}
    edges, nodes = generate_graph(GraphCommunitySpec(**generator))
    edges.to_parquet(tmp_path / "edges.parquet", index=False)
    nodes.drop(columns="block").to_parquet(tmp_path / "nodes.parquet", index=False)
    return {
        "planted": {
            "n_groups": 2, "tasks_per_group": 2, "n_train": 20, "n_val": 10, "n_test": 10,
            "n_features": 3, "label_noise": 0.0, "within_group_spread": 0.2,
            "covariance_decay": 1.0, "train_imbalance": 2.0, "seed": 0,
        },
        "graph generator": generator,
        "graph files": {"edges_path": str(tmp_path / "edges.parquet"),
                        "nodes_path": str(tmp_path / "nodes.parquet")},
    }


@pytest.mark.parametrize(
    "case, left_out, unknown, message",
    [
        ("planted", "task_1", "task_9",
         "dataset.planted.exclude_tasks names task(s) ['task_9'] that the planted generator "
         "(task_0.. up to n_groups x tasks_per_group) does not have; the data's 4 tasks are "
         "'task_0', 'task_1', 'task_2', 'task_3'"),
        ("graph generator", "community_1", "community_7",
         "dataset.graph_communities.exclude_tasks names task(s) ['community_7'] that the "
         "generated graph (community_0.. of n_blocks x communities_per_block) does not have; "
         "the data's 4 tasks are 'community_0', 'community_1', 'community_2', 'community_3'"),
        ("graph files", "community_1", "community_7",
         "{nodes}: dataset.graph_communities.exclude_tasks names task(s) ['community_7'] that "
         "the node table (community columns) does not have; the data's 4 tasks are "
         "'community_0', 'community_1', 'community_2', 'community_3'"),
    ],
)
def test_every_kind_leaves_tasks_out_by_name_and_the_others_stay_the_same(
    tmp_path, case, left_out, unknown, message
):
    from snakemake.utils import validate

    from taskgroup.config import run_summary

    kind_name = case.split()[0].replace("graph", "graph_communities")
    section = excluding_sections(tmp_path)[case]
    kind = DATASET_KINDS[kind_name]
    full_examples, full_tasks = kind.load(kind.spec(section))
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["dataset"] = {"name": "x", "kind": kind_name,
                         kind_name: {**section, "exclude_tasks": [left_out]}}
    config["evaluation"]["baselines"] = ["naive_mtl"]
    validate(config, str(ROOT / "config" / "config.schema.yaml"))
    assert n_tasks(config) == 3  # at parse time
    assert f"left out (dataset.{kind_name}.exclude_tasks): '{left_out}'" in run_summary(
        config, 3
    )
    examples, tasks = kind.load(kind.spec(config["dataset"][kind_name]))
    kept = [task for task in full_tasks["task"] if task != left_out]
    assert tasks["task"].tolist() == kept
    assert tasks["task_index"].tolist() == [0, 1, 2]
    expected = full_tasks[full_tasks["task"] != left_out].drop(columns="task_index")
    pd.testing.assert_frame_equal(
        tasks.drop(columns="task_index"), expected.reset_index(drop=True)
    )
    # the other tasks' examples (features, labels, splits) are those of the full dataset
    pd.testing.assert_frame_equal(
        examples,
        full_examples[full_examples["task"] != left_out].reset_index(drop=True),
    )
    wrong = {**section, "exclude_tasks": [unknown]}
    text = message.format(nodes=section.get("nodes_path"))
    with pytest.raises(DataError, match=re.escape(text)):
        kind.n_tasks(kind.spec(wrong))
    with pytest.raises(DataError, match=re.escape(text)):
        kind.load(kind.spec(wrong))
    every = {**section, "exclude_tasks": full_tasks["task"].tolist()}
    with pytest.raises(DataError, match=rf"dataset\.{kind_name}\.exclude_tasks leaves out "
                                        r"every task of the data \(.*\); keep at least one"):
        kind.n_tasks(kind.spec(every))


def test_a_community_too_small_to_split_can_be_left_out(tmp_path):
    section = excluding_sections(tmp_path)["graph files"]
    nodes = pd.read_parquet(section["nodes_path"])
    nodes["community_tiny"] = (np.arange(len(nodes)) < 2).astype(np.int8)
    nodes["community_tiny"] = nodes["community_tiny"].astype(np.int8)
    nodes.to_parquet(section["nodes_path"], index=False)
    kind = DATASET_KINDS["graph_communities"]
    with pytest.raises(DataError, match="community 'community_tiny' has 2 members"):
        kind.load(kind.spec(section))
    # community_groups may keep a group for the community left out
    groups = {f"community_{i}": i // 2 for i in range(4)}
    _, tasks = kind.load(kind.spec(
        {**section, "exclude_tasks": ["community_tiny"],
         "community_groups": {**groups, "community_tiny": 0}}
    ))
    assert tasks["task"].tolist() == [f"community_{i}" for i in range(4)]
    assert tasks["planted_group"].tolist() == [0, 0, 1, 1]
