"""The user-table loader (taskgroup.data.datasets.table): conversion, splits and bad input."""

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from taskgroup.config import ConfigError, check_config, n_tasks
from taskgroup.data.datasets import DataError
from taskgroup.data.datasets.table import load_table, normalize_task_name, table_spec
from taskgroup.data.examples import build_task_data
from taskgroup.data.tables import EXAMPLES, TASKS, check_columns

ROOT = Path(__file__).resolve().parents[1]


def user_frame(n_tasks=4, rows=40, seed=0, regression=False) -> pd.DataFrame:
    """A small well-formed table: tasks 1..n_tasks (integers), features a, b, a text column,
    a split column (60/20/20, both classes in every split)."""
    rng = np.random.default_rng(seed)
    frames = []
    for task in range(1, n_tasks + 1):
        a = rng.normal(5.0, 2.0, rows)
        b = rng.normal(size=rows)
        label = a + b if regression else np.tile([0, 1], rows // 2)
        split = np.repeat(["train", "val", "test"], [rows * 3 // 5, rows // 5, rows // 5])
        frames.append(pd.DataFrame({
            "task": task, "a": a, "b": b, "note": "x", "label": label, "split": split,
        }))
    return pd.concat(frames, ignore_index=True)


def write(frame: pd.DataFrame, path: Path) -> str:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return str(path)


def spec(path, **overrides):
    section = {"path": str(path), "task_column": "task", "label_column": "label",
               "split_column": "split"}
    section.update(overrides)
    return table_spec(section)


@pytest.fixture
def table(tmp_path):
    return write(user_frame(), tmp_path / "data.parquet")


# --- conversion ------------------------------------------------------------------------------


def test_table_becomes_examples_and_tasks_tables(table):
    examples, tasks = load_table(spec(table))
    check_columns(examples, EXAMPLES, "examples")
    check_columns(tasks, TASKS, "tasks")
    assert list(examples.columns) == ["task", "split", "feature_a", "feature_b", "label"]
    assert (examples[["feature_a", "feature_b", "label"]].dtypes == np.float32).all()
    assert tasks["task"].tolist() == ["1", "2", "3", "4"]
    assert tasks["task_type"].eq("binary").all()
    assert tasks[["n_train", "n_val", "n_test"]].iloc[0].tolist() == [24, 8, 8]
    assert tasks["planted_group"].isna().all()
    train = examples[examples["split"] == "train"]
    np.testing.assert_allclose(train[["feature_a", "feature_b"]].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(train[["feature_a", "feature_b"]].std(ddof=0), 1, atol=1e-5)
    data = build_task_data(examples, tasks)
    assert data.n_tasks == 4 and data.n_features == 2


def test_csv_numeric_order_groups_and_task_subset(tmp_path):
    frame = user_frame(n_tasks=11)
    path = write(frame, tmp_path / "data.csv")
    groups = pd.DataFrame({"task": range(1, 12), "terrain": ["wet"] * 5 + ["dry"] * 6})
    groups_path = write(groups, tmp_path / "groups.parquet")
    _, tasks = load_table(spec(path, groups_path=groups_path, group_column="terrain"))
    assert tasks["task"].tolist()[:3] == ["1", "2", "3"] and tasks["task"].iloc[-1] == "11"
    assert tasks["planted_group"].tolist() == [1] * 5 + [0] * 6  # "dry" < "wet"
    _, subset = load_table(spec(path, tasks=[11, "2"]))
    assert subset["task"].tolist() == ["2", "11"]


def test_regression_auto_and_constant_feature(table, tmp_path):
    frame = user_frame(regression=True)
    frame["b"] = 3.0
    examples, tasks = load_table(spec(write(frame, tmp_path / "r.parquet")))
    assert tasks["task_type"].eq("regression").all()
    assert (examples["feature_b"] == 0).all()  # constant: centred, divided by 1
    train = examples[examples["split"] == "train"]["label"]
    assert abs(train.mean()) < 1e-5 and abs(train.std(ddof=0) - 1) < 1e-5
    raw, _ = load_table(spec(write(frame, tmp_path / "r.parquet"), standardize_label=False))
    assert raw["label"].max() > 5


def test_drawn_split_is_seeded_stratified_and_per_task(tmp_path):
    frame = user_frame(rows=50).drop(columns="split")
    path = write(frame, tmp_path / "data.parquet")
    examples, tasks = load_table(spec(path, split_column=None, seed=3))
    again, _ = load_table(spec(path, split_column=None, seed=3))
    pd.testing.assert_frame_equal(examples, again)
    assert tasks[["n_train", "n_val", "n_test"]].iloc[0].tolist() == [30, 10, 10]
    positives = examples.groupby(["task", "split"])["label"].sum()
    assert (positives.xs("train", level="split") == 15).all()  # 60% of each class
    # Rows are stored by task and split; standardization keeps each output's feature order,
    # so equal ranks of feature_a mean the same rows in the same splits.
    other, _ = load_table(spec(path, split_column=None, seed=4))
    assert not examples["feature_a"].rank().equals(other["feature_a"].rank())
    only_two, _ = load_table(spec(path, split_column=None, seed=3, tasks=["2", "3"]))
    same = examples[examples["task"].isin(["2", "3"])].reset_index(drop=True)
    assert only_two["split"].equals(same["split"])
    assert only_two["feature_a"].rank().equals(same["feature_a"].rank())  # per task


def test_task_name_normalization():
    assert normalize_task_name(np.int16(7)) == "7"
    assert normalize_task_name(7.0) == "7"
    assert normalize_task_name(7.5) == "7.5"
    assert normalize_task_name("  field A ") == "field A"
    assert normalize_task_name(float("nan")) is None
    assert normalize_task_name("  ") is None


def test_config_counts_table_tasks_at_parse_time(table):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["dataset"].update(kind="table", table={
        "path": table, "task_column": "task", "label_column": "label", "tasks": [1, 2, 3],
    })
    config["subsets"].update(size=2, count=3)
    config["clustering"]["n_clusters"] = 2
    config["evaluation"]["baselines"] = ["naive_mtl", "stl"]
    assert n_tasks(config) == 3
    check_config(config)
    with_planted = copy.deepcopy(config)
    with_planted["evaluation"]["baselines"] = ["planted"]
    with pytest.raises(ConfigError, match="has no planted groups .*groups_path"):
        check_config(with_planted)


def test_example_configs_are_valid():
    from snakemake.utils import validate

    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for name, k in (("landmine", 29), ("school", 139)):
        example = yaml.safe_load((ROOT / "config" / "examples" / f"{name}.yaml").read_text())
        assert set(example) == set(default)  # complete: every top-level key
        assert example["dataset"]["name"] == name
        validate(example, str(ROOT / "config" / "config.schema.yaml"))
        path = ROOT / example["dataset"]["table"]["path"]
        if path.exists():
            section = dict(example["dataset"]["table"], path=str(path))
            section["groups_path"] = section["groups_path"] and str(ROOT / section["groups_path"])
            assert n_tasks({"dataset": {"kind": "table", "table": section}}) == k


# --- bad input: each names the file, the column and the offending values ----------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.parquet: file not found \(dataset\.table\.path"):
        load_table(spec(tmp_path / "nowhere.parquet"))


@pytest.mark.parametrize("key, column", [("task_column", "school"), ("label_column", "y")])
def test_missing_task_or_label_column(table, key, column):
    with pytest.raises(DataError, match=rf"data\.parquet: no column '{column}' "
                                        rf"\(dataset\.table\.{key}\); the file has columns"):
        load_table(spec(table, **{key: column}))


def test_feature_column_that_is_not_numeric(table):
    with pytest.raises(DataError, match=r"data\.parquet: feature column 'note' is not numeric "
                                        r"\(dtype .*; values such as 'x' in 160 row"):
        load_table(spec(table, features=["a", "note"]))
    examples, _ = load_table(spec(table))  # "auto" leaves text columns out
    assert "feature_note" not in examples


def test_nan_and_infinite_values_name_column_and_count(tmp_path):
    frame = user_frame()
    frame.loc[[3, 50, 51], "b"] = np.nan
    frame.loc[7, "a"] = np.inf
    path = write(frame, tmp_path / "data.parquet")
    with pytest.raises(DataError) as error:
        load_table(spec(path))
    message = str(error.value)
    assert message.startswith(f"{path}: NaN or infinite values in column 'a': 1 row(s) "
                              "(data rows 7); column 'b': 3 row(s) (data rows 3, 50, 51).")
    with pytest.raises(DataError, match=r"column 'b': 2 row\(s\) \(data rows 50, 51\)"):
        load_table(spec(path, tasks=[2]))  # rows of the file, not of the selection


def test_binary_task_with_a_single_class(tmp_path):
    frame = user_frame()
    frame.loc[frame["task"] == 3, "label"] = 0
    path = write(frame, tmp_path / "data.parquet")
    with pytest.raises(DataError, match=r"data\.parquet: binary task\(s\) with a single class "
                                        r"in column 'label': '3' \(only label 0 in 40 rows\)"):
        load_table(spec(path))


def test_binary_split_with_a_single_class(tmp_path):
    frame = user_frame()
    frame.loc[(frame["task"] == 2) & (frame["split"] == "val"), "label"] = 1
    path = write(frame, tmp_path / "data.parquet")
    with pytest.raises(DataError, match=r"single class in one split of column 'label': '2' val "
                                        r"\(only label 1 in 8 rows\)"):
        load_table(spec(path))


def test_task_with_too_few_rows_in_a_split(tmp_path):
    frame = user_frame()
    frame = frame[~((frame["task"] == 4) & (frame.index % 40 >= 36))]  # task 4: 4 test rows
    path = write(frame, tmp_path / "data.parquet")
    with pytest.raises(DataError, match=r"data\.parquet: task\(s\) with fewer than dataset\.table"
                                        r"\.min_rows_per_split = 5 rows in a split \(column "
                                        r"'task'\): '4' \(train 24, val 8, test 4\)"):
        load_table(spec(path))
    load_table(spec(path, min_rows_per_split=4))


def test_duplicate_task_names_after_normalization(tmp_path):
    frame = user_frame()
    frame["task"] = frame["task"].map({1: "north", 2: "north ", 3: "south", 4: "east"})
    path = write(frame, tmp_path / "data.parquet")
    with pytest.raises(DataError, match=r"data\.parquet: column 'task' has the distinct values "
                                        r"'north' and 'north ', which both become the task "
                                        r"name 'north'"):
        load_table(spec(path))


def test_config_names_a_task_the_data_lacks(table):
    with pytest.raises(DataError, match=r"data\.parquet: dataset\.table\.tasks names task\(s\) "
                                        r"\['9'\] that column 'task' does not have; the data's "
                                        r"4 tasks are '1', '2', '3', '4'"):
        load_table(spec(table, tasks=[1, 9]))


def test_other_bad_input(table, tmp_path):
    with pytest.raises(DataError, match=r"column 'split' .* has values 'training' in 1 row"):
        frame = user_frame()
        frame.loc[0, "split"] = "training"
        load_table(spec(write(frame, tmp_path / "s.parquet")))
    with pytest.raises(DataError, match=r"task_type is 'binary', but column 'label' has "
                                        r"values other than 0 and 1"):
        load_table(spec(write(user_frame(regression=True), tmp_path / "r.parquet"),
                        task_type="binary"))
    with pytest.raises(DataError, match=r"feature column\(s\) \['c'\] .* not in the file"):
        load_table(spec(table, features=["a", "c"]))
    with pytest.raises(DataError, match=r"no 'terrain' for task\(s\) '4'"):
        groups = write(pd.DataFrame({"task": [1, 2, 3], "terrain": [0, 0, 1]}),
                       tmp_path / "g.csv")
        load_table(spec(table, groups_path=groups, group_column="terrain"))
    with pytest.raises(DataError, match="split_fractions .* summing to 1"):
        spec(table, split_fractions={"train": 0.5, "val": 0.2, "test": 0.2})
