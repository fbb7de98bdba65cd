"""Bad inputs give a message that names the key, file or column, the value found and what is
expected, at the earliest moment (issue 13): degenerate designs and bad names at parse time,
the user's files when they are read, corrupt intermediates and diverging trainings in the
stages."""

import copy
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from snakemake.utils import validate
from workflow_helpers import make_workdir, smoke_config, snakemake

from taskgroup.config import (
    MAX_PAIR_DESIGN_SUBSETS,
    MIN_PAIR_COVERAGE,
    ConfigError,
    check_config,
    check_yaml_file,
    n_tasks,
    pair_design_size,
    run_summary,
)
from taskgroup.data.datasets import DATASET_KINDS, DataError
from taskgroup.data.datasets.graph_files import load_graph
from taskgroup.data.datasets.graph_generator import GraphCommunitySpec, generate_graph
from taskgroup.data.datasets.table import load_table, table_spec, table_task_names
from taskgroup.data.designs import expected_pair_count
from taskgroup.data.tables import (
    GROUP_RESULTS,
    TASKS,
    UnreadableFileError,
    read_table,
    write_table,
)
from taskgroup.group.groupings import group_key
from taskgroup.models.network import MultiHeadNet, load_checkpoint, save_checkpoint
from taskgroup.models.training import (
    DIVERGENCE_FACTOR,
    TrainingDivergedError,
    TrainSettings,
    fit,
)
from taskgroup.stages.evaluate import evaluate_groupings
from taskgroup.stages.train import train_group_models

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "config" / "config.schema.yaml")


@pytest.fixture
def smoke():
    config = smoke_config()
    validate(config, SCHEMA)
    return config


# --- degenerate random designs (parse time) ---------------------------------------------------


def test_subsets_of_one_task_are_refused_naming_a_size_that_covers_the_pairs(smoke):
    smoke["subsets"].update(size=1, count=9)
    with pytest.raises(ConfigError) as error:
        check_config(smoke)
    message = str(error.value)
    assert "subsets.size (alpha) = 1 and subsets.count (m) = 9" in message
    assert "k = 9 tasks in 0 subsets on average" in message
    assert "no pair of tasks shares a subset" in message
    assert "affinity.sources lists higher_order" in message
    assert "surrogates.enabled" in message
    # 9 subsets of 4 out of 9 tasks: 9 * 4 * 3 / (9 * 8) = 1.5 >= 1; of 3: 0.75
    assert message.endswith("Use subsets.size = 4")
    assert expected_pair_count(9, 4, 9) >= MIN_PAIR_COVERAGE > expected_pair_count(9, 3, 9)


def test_subsets_of_every_task_are_refused_as_a_constant_affinity(smoke):
    smoke["subsets"].update(size=9, count=1)
    with pytest.raises(ConfigError) as error:
        check_config(smoke)
    message = str(error.value)
    assert "subsets.size (alpha) = 9 and subsets.count (m) = 1" in message
    assert "every subset is the whole set of k = 9 tasks" in message
    assert "constant affinity" in message
    assert "between 2 and k - 1 = 8, e.g. subsets.size = 8 with subsets.count >= 2" in message


def test_a_design_leaving_most_pairs_uncovered_names_the_count_and_size_that_cover_them(
    smoke,
):
    # 160 tasks with the default design (600 subsets of 5): 0.47 subsets per pair.
    smoke["dataset"]["planted"].update(n_groups=16, tasks_per_group=10)
    smoke["clustering"]["n_clusters"] = 16
    smoke["subsets"].update(size=5, count=600)
    with pytest.raises(ConfigError) as error:
        check_config(smoke)
    message = str(error.value)
    assert "k = 160 tasks in 0.472 subsets on average" in message
    assert "about 62% of the pairs share none" in message
    # 160 * 159 / 20 = 1272 subsets of 5; 600 subsets of 8: 600 * 56 / 25440 = 1.32
    assert message.endswith("Use subsets.count >= 1272 or subsets.size = 8")
    for fix in ({"count": 1272}, {"size": 8}):
        fixed = copy.deepcopy(smoke)
        fixed["subsets"].update(fix)
        check_config(fixed)
    smoke["subsets"]["count"] = 1271
    with pytest.raises(ConfigError, match="in 0.999 subsets on average"):
        check_config(smoke)


def test_the_coverage_check_applies_only_when_a_source_compares_pairs(smoke):
    smoke["subsets"].update(size=1, count=9)
    smoke["affinity"]["sources"] = ["gradient_cosine", "covariance"]
    with pytest.raises(ConfigError, match="the surrogates .surrogates.enabled: true. needs"):
        check_config(smoke)
    smoke["surrogates"]["enabled"] = False
    check_config(smoke)  # nothing reads the random design's pairs


def test_every_shipped_config_covers_its_pairs():
    """The threshold leaves every shipped config valid (the table examples are counted from
    their data only where the shared data is present)."""
    paths = [ROOT / "config" / "config.yaml", ROOT / "tests" / "smoke" / "config.yaml"]
    paths += sorted((ROOT / "config" / "examples").glob("*.yaml"))
    for path in paths:
        config = yaml.safe_load(path.read_text())
        validate(config, SCHEMA)
        table = config["dataset"].get("table")
        if config["dataset"]["kind"] == "table":
            data = ROOT / table["path"]
            if not data.exists():
                continue
            table["path"] = str(data)
        check_config(config)


def test_a_degenerate_design_stops_the_dry_run_before_any_job(tmp_path):
    config = smoke_config()
    config["subsets"].update(size=1, count=9)
    workdir = make_workdir(tmp_path, config)
    result = snakemake(workdir, "-n", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert re.search(r"subsets.size \(alpha\) = 1 and subsets.count \(m\) = 9 .* k = 9", output)
    assert not (workdir / "results").exists()


# --- a pair design too large to plan (parse time) ----------------------------------------------


def test_a_pair_design_too_large_is_refused_naming_its_size_and_the_keys_to_change(smoke):
    # k = 201 tasks: 201 + 201 * 200 / 2 = 20,301 singletons and pairs
    smoke["dataset"]["planted"].update(n_groups=67, tasks_per_group=3)
    smoke["subsets"].update(size=20, count=200)  # covers the pairs 1.9 times
    smoke["subsets"]["pairs"] = {"sample_above_tasks": 1000, "per_task": 20, "seed": 0}
    assert pair_design_size(201, None) == 20_301 > MAX_PAIR_DESIGN_SUBSETS
    with pytest.raises(ConfigError) as error:
        check_config(smoke)
    assert str(error.value) == (
        "config: the pairwise affinity (affinity.sources lists pairwise) and the surrogates' "
        "negative-transfer scores (surrogates.enabled: true) need the singletons-and-pairs "
        "design, which for k = 201 tasks has 20,301 subsets (k + k (k - 1) / 2), valued in "
        "1,354 jobs of subsets.chunk_size = 15; more than 20,000 subsets are refused. To "
        "avoid it, drop pairwise from affinity.sources and set surrogates.enabled: false (the "
        "higher-order affinity on the random design of subsets.* still works), or keep at "
        "most 199 tasks, or sample the pairs (subsets.pairs.sample_above_tasks below k)"
    )
    assert pair_design_size(199, None) <= MAX_PAIR_DESIGN_SUBSETS < pair_design_size(200, None)
    smoke["surrogates"]["enabled"] = False
    with pytest.raises(ConfigError, match=r"^config: the pairwise affinity .* needs the .*To "
                                          r"avoid it, drop pairwise from affinity.sources \("):
        check_config(smoke)
    smoke["affinity"]["sources"].remove("pairwise")
    check_config(smoke)  # no pair design: the same 201 tasks pass
    smoke["affinity"]["sources"].append("pairwise")
    smoke["subsets"]["pairs"]["sample_above_tasks"] = 60
    check_config(smoke)  # sampled pairs: 201 + 201 x 10 subsets pass


# --- config files that are not YAML (parse time) -----------------------------------------------


def test_a_yaml_syntax_error_in_the_config_names_the_file_and_the_line(tmp_path):
    workdir = make_workdir(tmp_path)
    path = workdir / "config" / "config.yaml"
    lines = path.read_text().splitlines()
    number = next(i for i, line in enumerate(lines) if line.startswith("    n_train:"))
    lines[number] = lines[number].replace("    ", "\t", 1)  # a tab indents the key
    path.write_text("\n".join(lines) + "\n")
    result = snakemake(workdir, "-n", check=False)
    assert result.returncode != 0
    assert re.search(
        rf"config/config\.yaml: not valid YAML at line {number + 1}, column 1: 'n_train: 60' "
        r"\(found character '\\t' that cannot start any token.*no tabs",
        result.stdout + result.stderr,
    ), result.stderr[-2000:]


@pytest.mark.parametrize(
    "text, found",
    [
        ("dataset:\n  name: x\nmeta_init: {epochs: 20, lr: 0.01\nmodel: {}\n",
         r"at line 4, column 6: 'model: \{\}' \(expected ',' or '\}', but got ':'"),
        ("dataset:\n  name: x\n   kind: planted\n",
         r"at line 3, column 8: 'kind: planted' \(mapping values are not allowed here"),
        ("- dataset\n- model\n", r"must be a mapping of keys .* the file holds a list"),
    ],
)
def test_config_syntax_errors_name_the_line_and_the_problem(tmp_path, text, found):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: .*{found}"):
        check_yaml_file(path)
    path.write_text("dataset:\n  name: x\n")
    check_yaml_file(path)
    check_yaml_file(tmp_path / "absent.yaml")  # Snakemake reports a missing file itself


def test_a_configfile_with_a_syntax_error_is_named_with_its_line_by_the_checker(tmp_path, capsys):
    """Snakemake reads a --configfile before the workflow starts, and its message names
    neither the file nor the line (checked here, so that the README's advice goes when
    Snakemake's message improves); `python -m taskgroup.config FILE` names both."""
    from snakemake.exceptions import WorkflowError
    from snakemake.settings.types import ConfigSettings

    from taskgroup.config import main

    bad = tmp_path / "my.yaml"
    bad.write_text("dataset:\n  name: x\n\tkind: planted\n")
    with pytest.raises(WorkflowError) as error:
        ConfigSettings(configfiles=[bad])
    assert "not valid JSON or YAML" in str(error.value) and str(bad) not in str(error.value)

    good = tmp_path / "good.yaml"
    good.write_text("dataset:\n  name: x\n")
    assert main([str(good), str(bad), str(tmp_path / "absent.yaml")]) == 1
    out, err = capsys.readouterr()
    assert out == f"{good}: valid YAML with keys at the top level\n"
    assert err.startswith(
        f"{bad}: not valid YAML at line 3, column 1: 'kind: planted' (found character '\\t' "
        "that cannot start any token"
    )
    assert err.endswith(f"{tmp_path / 'absent.yaml'}: file not found\n")
    assert main([str(good)]) == 0
    result = subprocess.run(
        [sys.executable, "-m", "taskgroup.config", str(bad)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 1 and f"{bad}: not valid YAML at line 3" in result.stderr


# --- dataset.name: a plain folder name under results/ -----------------------------------------


@pytest.mark.parametrize("name", [".", "..", ".hidden", "a/b", "../up", "-x", "", "a b"])
def test_dataset_name_must_be_a_plain_folder_name(smoke, name):
    smoke["dataset"]["name"] = name
    with pytest.raises(Exception, match="does not match"):
        validate(smoke, SCHEMA)


@pytest.mark.parametrize("name", ["smoke", "run.1", "my_data-2", "_x", "2024"])
def test_plain_folder_names_pass(smoke, name):
    smoke["dataset"]["name"] = name
    validate(smoke, SCHEMA)


def test_a_dot_in_the_dataset_name_matches_only_a_dot(tmp_path):
    """The name is escaped in the wildcard constraint: with name run.1 no rule writes
    results/runX1/ (an unescaped '.' would match the 'X')."""
    config = smoke_config()
    config["dataset"]["name"] = "run.1"
    workdir = make_workdir(tmp_path, config)
    result = snakemake(workdir, "-n", "results/runX1/data/tasks.parquet", check=False)
    assert result.returncode != 0
    assert "No rule to produce results/runX1/data/tasks.parquet" in result.stdout + result.stderr
    result = snakemake(workdir, "-n", "results/run.1/data/tasks.parquet")
    assert "prepare_dataset" in result.stdout
    # what the config decided, on the console before any job (run_summary)
    assert "taskgroup: dataset 'run.1' (dataset.kind: planted), k = 9 tasks; estimator: " \
        "finetune; results in results/run.1/\n" in result.stderr


def test_the_run_summary_names_k_the_tasks_left_out_the_coverage_and_the_estimator(tmp_path):
    path = csv_table(tmp_path / "data.csv", [f"t{i}" for i in range(12)])
    config = smoke_config()
    config["dataset"] = {
        "name": "mine", "kind": "table",
        "table": table_section(path, exclude_tasks=["t3", "t10"]),
    }
    config["estimator"] = "gradient"
    validate(config, SCHEMA)
    assert run_summary(config, n_tasks(config)) == [
        "dataset 'mine' (dataset.kind: table), k = 10 tasks; estimator: gradient; results in "
        "results/mine/",
        "left out (dataset.table.exclude_tasks): 't3', 't10'",
        # 30 subsets of 3 out of 10 tasks: 30 * 3 * 2 / (10 * 9) = 2 pairs; exp(-2) = 14%
        "random design: 30 subsets of 3 tasks; a pair of tasks is in 2 subsets on average "
        "(about 14% of the pairs in none)",
        "pair design: 55 subsets (every task alone and every pair)",
    ]
    config["affinity"]["sources"] = ["covariance"]
    config["surrogates"]["enabled"] = False
    config["dataset"]["table"]["exclude_tasks"] = []
    assert run_summary(config, 12) == [
        "dataset 'mine' (dataset.kind: table), k = 12 tasks; estimator: gradient; results in "
        "results/mine/",
    ]


# --- the user's table and graph files ---------------------------------------------------------


def csv_table(path: Path, tasks: list[str], rows: int = 30, seed: int = 0) -> Path:
    """A CSV table whose task column is written exactly as ``tasks`` spell it, ``rows``
    rows per task (both labels in every split of the drawn 60/20/20 split)."""
    rng = np.random.default_rng(seed)
    lines = ["task,a,b,label"]
    for task in tasks:
        for row in range(rows):
            lines.append(f"{task},{rng.normal():.6f},{rng.normal():.6f},{row % 2}")
    path.write_text("\n".join(lines) + "\n")
    return path


def table_section(path, **overrides) -> dict:
    return {"path": str(path), "task_column": "task", "label_column": "label", **overrides}


def test_csv_task_ids_keep_their_spelling(tmp_path):
    path = csv_table(tmp_path / "data.csv", ["01", "1", "2", "10", "1.0"])
    spec = table_spec(table_section(path))
    assert table_task_names(spec) == ["01", "1", "1.0", "2", "10"]  # by value, then name
    examples, tasks = load_table(spec)
    assert tasks["task"].tolist() == ["01", "1", "1.0", "2", "10"]
    assert examples.groupby("task", sort=False).size().to_dict() == {
        "01": 30, "1": 30, "1.0": 30, "2": 30, "10": 30,
    }


def test_tasks_are_left_out_by_name_and_a_name_the_data_lacks_is_an_error(tmp_path, caplog):
    path = csv_table(tmp_path / "data.csv", ["a", "b", "c", "07"])
    spec = table_spec(table_section(path, exclude_tasks=["b", 7]))
    with pytest.raises(DataError, match=re.escape(
        f"{path}: dataset.table.exclude_tasks names task(s) ['7'] that column 'task' does "
        "not have; the data's 4 tasks are '07', 'a', 'b', 'c'"
    )):
        table_task_names(spec)
    config = smoke_config()
    config["dataset"] = {
        "name": "t", "kind": "table",
        "table": table_section(path, exclude_tasks=["b", "07"]),
    }
    validate(config, SCHEMA)
    assert n_tasks(config) == 2
    with caplog.at_level(logging.INFO, logger="taskgroup.data.datasets.task_selection"):
        examples, tasks = load_table(table_spec(config["dataset"]["table"]))
    assert tasks["task"].tolist() == ["a", "c"] and set(examples["task"]) == {"a", "c"}
    assert f"{path}: dataset.table.exclude_tasks leaves out 2 task(s): 'b', '07'; 2 remain" in (
        caplog.text
    )
    # after tasks: what tasks keeps, minus the excluded; nothing left is an error
    both = table_spec(table_section(path, tasks=["a", "b"], exclude_tasks=["b"]))
    assert table_task_names(both) == ["a"]
    with pytest.raises(DataError, match=r"exclude_tasks leaves out every task of "
                                        r"dataset.table.tasks \('a'\); keep at least one"):
        table_task_names(table_spec(table_section(path, tasks=["a"], exclude_tasks=["a"])))
    default = smoke_config()
    default["dataset"] = {"name": "t", "kind": "table", "table": table_section(path)}
    validate(default, SCHEMA)
    assert default["dataset"]["table"]["exclude_tasks"] == []


def test_csv_task_names_that_look_missing_are_names(tmp_path):
    path = csv_table(tmp_path / "data.csv", ["NA", "None", "n/a", "nan"])
    _, tasks = load_table(table_spec(table_section(path)))
    assert tasks["task"].tolist() == ["NA", "None", "n/a", "nan"]
    # only an empty cell is missing
    text = path.read_text().splitlines()
    text[3] = "," + text[3].split(",", 1)[1]
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"column 'task' is empty in 1 row\(s\) \(data rows 2,"):
        load_table(table_spec(table_section(path)))


def test_csv_features_keep_pandas_missing_markers(tmp_path):
    path = csv_table(tmp_path / "data.csv", ["x", "y"])
    text = path.read_text().splitlines()
    text[5] = text[5].split(",")[0] + ",NA," + ",".join(text[5].split(",")[2:])
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"NaN or infinite values in column 'a': 1 row\(s\) "
                                        r"\(data rows 4\)"):
        load_table(table_spec(table_section(path)))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"data\.csv: not a readable CSV file \(the file is empty: no header line\)"),
        (b"task,a,b,label\n", r"data\.csv: the file has a header but no data rows"),
        (b"PAR1\x00\x01\x02", r"data\.csv: not a readable CSV file \(it is a Parquet file: "
                              r"name it \.parquet\)"),
    ],
    ids=["empty", "header-only", "parquet-named-csv"],
)
def test_unreadable_csv_names_the_file_at_parse_time(tmp_path, content, message):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    config = {"dataset": {"kind": "table", "table": table_section(path)}}
    with pytest.raises(DataError, match=message):
        n_tasks(config)
    with pytest.raises(DataError, match=message):
        load_table(table_spec(table_section(path)))


def test_csv_saved_as_parquet_and_truncated_parquet_name_the_file(tmp_path):
    text = csv_table(tmp_path / "data.csv", ["a", "b"]).read_bytes()
    fake = tmp_path / "data.parquet"
    fake.write_bytes(text)
    with pytest.raises(
        DataError,
        match=r"data\.parquet: not a readable Parquet file \(it does not start with the bytes "
              r"PAR1 .*; it starts like text: 'task,a,b,label'\); a file ending in \.parquet "
              r"or \.pq is read as Parquet: give a CSV file a \.csv name",
    ):
        table_task_names(table_spec(table_section(fake)))
    pd.read_csv(tmp_path / "data.csv").to_parquet(fake)
    whole = fake.read_bytes()
    fake.write_bytes(whole[: len(whole) // 2])
    for read in (table_task_names, load_table):
        with pytest.raises(DataError, match=r"data\.parquet: not a readable Parquet file \(it "
                                            rf"is cut short \({len(whole) // 2} bytes"):
            read(table_spec(table_section(fake)))
    fake.write_bytes(b"")
    with pytest.raises(DataError, match=r"not a readable Parquet file \(the file is empty"):
        table_task_names(table_spec(table_section(fake)))


def test_values_beyond_float32_are_refused_naming_column_and_rows(tmp_path):
    path = csv_table(tmp_path / "data.csv", ["x", "y"])
    frame = pd.read_csv(path, dtype={"task": str})
    frame.loc[[3, 30], "b"] = [1e300, -5e38]
    frame.loc[7, "a"] = 3e38  # within float32's range
    frame.to_csv(path, index=False)
    with pytest.raises(
        DataError,
        match=r"data\.csv: values beyond the float32 range \(\|x\| > 3\.4e\+38\) in column "
              r"'b': 2 row\(s\) \(data rows 3, 30, e\.g\. 1e\+300\)",
    ):
        load_table(table_spec(table_section(path)))


def test_unreadable_graph_files_name_the_file(tmp_path):
    edges = tmp_path / "edges.csv"
    nodes = tmp_path / "nodes.parquet"
    edges.write_text("")
    nodes.write_text("node,feature_a,community_a\n0,1.0,1\n")
    with pytest.raises(DataError, match=r"nodes\.parquet: not a readable Parquet file .*"
                                        r"starts like text: 'node,feature_a,community_a'"):
        load_graph(edges, nodes)
    pd.DataFrame({"node": [0, 1], "feature_a": [1.0, 2.0], "community_a": [1, 0]}).to_parquet(
        nodes
    )
    with pytest.raises(DataError, match=r"edges\.csv: not a readable CSV file \(the file is "
                                        r"empty: no header line\)"):
        load_graph(edges, nodes)
    edges.write_text("source,target\n")  # a graph without edges stays allowed
    loaded, _, _ = load_graph(edges, nodes)
    assert len(loaded) == 0


def test_a_graph_without_node_features_says_what_to_add_and_a_constant_feature_works(tmp_path):
    edges, nodes = generate_graph(GraphCommunitySpec(n_blocks=2, communities_per_block=2,
                                                     nodes_per_community=20))
    edges.to_parquet(tmp_path / "edges.parquet")
    bare = nodes[[c for c in nodes.columns if not c.startswith("feature_")]]
    bare.to_parquet(tmp_path / "nodes.parquet")
    kind = DATASET_KINDS["graph_communities"]
    spec = kind.spec({"edges_path": str(tmp_path / "edges.parquet"),
                      "nodes_path": str(tmp_path / "nodes.parquet")})
    with pytest.raises(DataError, match=r"nodes\.parquet: no feature columns \(names starting "
                                        r"with 'feature_'\); found columns \['node', .*a graph "
                                        r"without node attributes needs at least one: .*"
                                        r"feature_degree .* feature_one = 1"):
        kind.n_tasks(spec)  # at parse time
    bare.assign(feature_one=1.0).to_parquet(tmp_path / "nodes.parquet")
    examples, tasks = kind.load(spec)
    assert len(tasks) == 4
    # [X, SX, S^2 X] standardized: the constant column is 0, its propagations vary with degree
    spread = examples[["feature_000", "feature_001", "feature_002"]].std()
    assert spread["feature_000"] == 0 and (spread[["feature_001", "feature_002"]] > 0.1).all()


# --- intermediates the workflow wrote -------------------------------------------------------


def test_a_damaged_table_names_the_path_and_the_forcerun(tmp_path):
    path = tmp_path / "results" / "x" / "data" / "tasks.parquet"
    write_table(pd.DataFrame({"task": ["a"], "task_index": np.array([0], dtype=np.int64)}),
                path)
    whole = path.read_bytes()
    path.write_bytes(whole[:-10])
    forcerun = re.escape(f"`snakemake --forcerun {path}`")
    with pytest.raises(UnreadableFileError, match=rf"{re.escape(str(path))}: not a readable "
                       rf"Parquet file \(it is cut short \({len(whole) - 10} bytes.*{forcerun}"):
        read_table(path, TASKS)
    path.write_text("garbage")
    with pytest.raises(UnreadableFileError, match=r"does not start with the bytes PAR1 .*"
                                                  r"starts like text: 'garbage'"):
        read_table(path, TASKS)


def test_a_damaged_checkpoint_names_the_path_and_the_forcerun(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(MultiHeadNet(3, 2, [4]), ["a", "b"], path)
    assert load_checkpoint(path, ["a", "b"]).head_bias.shape == (2,)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        UnreadableFileError,
        match=rf"{re.escape(str(path))}: not a readable model checkpoint \(RuntimeError: "
              rf".*{re.escape(f'`snakemake --forcerun {path}`')}",
    ):
        load_checkpoint(path, ["a", "b"])
    path.unlink()
    with pytest.raises(FileNotFoundError):
        load_checkpoint(path, ["a", "b"])


# --- trainings that diverge -------------------------------------------------------------------


def train_small(data, lr, epochs=3):
    torch.manual_seed(0)
    model = MultiHeadNet(data.n_features, data.n_tasks, [2])
    settings = TrainSettings(epochs=epochs, lr=lr, batch_size=32)
    return fit(model, data, torch.arange(data.n_tasks), settings, seed=0)


def test_a_non_finite_training_loss_names_the_epoch_and_the_learning_rate(small_data):
    with pytest.raises(
        TrainingDivergedError,
        match=r"training diverged: the mean training loss of epoch 1 of 3 is nan \(at the "
              r"start 0\.69\d*\) with Adam, lr = 1e\+30, batch_size = 32, .*lower the "
              r"learning rate \(lr of the config section of this training: meta_init, "
              r"finetune or final\)",
    ):
        train_small(small_data, lr=1e30)
    # an update beyond float32 (a step of size 1e38 / (1 - 0.9)): torch's fused Adam
    # writes it as non-finite parameters, and the epoch's loss says so (the update in
    # separate operations raised an overflow, reported as such: see fit)
    with pytest.raises(TrainingDivergedError,
                       match=r"training diverged: the mean training loss of epoch 1 of 3 is "
                             r"nan .* lr = 1e\+38, .*lower the learning rate"):
        train_small(small_data, lr=1e38)


def test_a_loss_ending_far_above_its_start_is_logged(small_data, caplog):
    with caplog.at_level(logging.WARNING, logger="taskgroup.models.training"):
        history = train_small(small_data, lr=1e6, epochs=5)
    assert history[-1] > DIVERGENCE_FACTOR * 0.7
    assert history.rose_far and history.start == pytest.approx(0.69, abs=0.01)
    assert re.search(r"training loss rose from 0\.69\d* at the start to [\d.e+]+ in the last "
                     r"epoch \(5\) with lr = 1e\+06: the training may have diverged",
                     caplog.text)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="taskgroup.models.training"):
        history = train_small(small_data, lr=0.01, epochs=5)
    assert history[-1] < history[0] and "diverged" not in caplog.text
    assert not history.rose_far


def test_a_diverged_group_model_is_flagged_in_its_results_and_counted_in_the_summary(
    small_tables, tmp_path, caplog,
):
    """final.lr far too large for one group (naive MTL): its results say diverged on every
    row, the summary counts its models (n_diverged) and the evaluation log names it; the
    single-task models trained with a sound learning rate are not flagged."""
    examples, tasks = small_tables
    write_table(examples, tmp_path / "examples.parquet")
    write_table(tasks, tmp_path / "tasks.parquet")
    names = tasks["task"].tolist()
    groupings = {
        "naive_mtl": pd.DataFrame({"task": names, "group": 0}),
        "stl": pd.DataFrame({"task": names, "group": range(len(names))}),
    }
    grouping_paths, result_paths = {}, []
    for name, grouping in groupings.items():
        grouping_paths[name] = tmp_path / f"{name}.parquet"
        write_table(grouping, grouping_paths[name])
        groups = {group_key(list(m)): list(m) for _, m in grouping.groupby("group")["task"]}
        result_paths.append(tmp_path / f"{name}_results.parquet")
        train_group_models(
            tmp_path / "examples.parquet", tmp_path / "tasks.parquet", groups,
            result_paths[-1], tmp_path / "models", [], [2],
            {"epochs": 5, "lr": 1e6 if name == "naive_mtl" else 0.01, "batch_size": 32,
             "weight_decay": 0.0}, [0, 1], selection={"fraction": 0.5, "seed": 0},
             budget="epochs", patience=None,
        )
    results = pd.concat(read_table(path, GROUP_RESULTS) for path in result_paths)
    flags = {key: rows["diverged"].tolist() for key, rows in results.groupby("group_key")}
    mtl_key = group_key(names)
    assert flags.pop(mtl_key) == [True] * (2 * len(names) * 3)  # seeds x tasks x splits
    assert not any(any(rows) for rows in flags.values())
    with caplog.at_level(logging.WARNING, logger="taskgroup.stages.evaluate"):
        evaluate_groupings(
            grouping_paths, result_paths, tmp_path / "tasks.parquet",
            tmp_path / "per_task.parquet", tmp_path / "summary.parquet",
            tmp_path / "summary.html",
        )
    summary = pd.read_parquet(tmp_path / "summary.parquet")
    assert summary.columns[-1] == "n_diverged"
    assert summary.set_index("grouping")["n_diverged"].to_dict() == {"naive_mtl": 2, "stl": 0}
    assert re.search(r"2 group model training\(s\) ended with a training loss far above its "
                     r"start .*lower final\.lr.*: naive_mtl \(plain, 2\)$", caplog.text.strip())


# --- the schema's own text ----------------------------------------------------------------------


def test_schema_descriptions_are_whole_and_no_property_is_a_stray_key():
    """An unquoted comma in a flow mapping cuts a description and adds a key with no value
    (validation errors would print the cut text)."""
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    stray = []

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if value is None and key != "default":
                    stray.append(f"{where}/{key}")
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(schema, "")
    assert stray == []
    subsets = schema["properties"]["subsets"]["properties"]
    assert subsets["size"]["description"] == "alpha, tasks per subset"
    assert subsets["count"]["description"] == "m, number of distinct subsets"
    table = schema["properties"]["dataset"]["properties"]["table"]["properties"]
    assert table["path"]["description"] == (
        "Parquet or CSV file, relative to the directory Snakemake runs in"
    )


# --- the planted baseline without a known grouping (parse time) -----------------------------


def test_planted_baseline_without_groups_names_both_fixes(tmp_path):
    path = csv_table(tmp_path / "data.csv", ["a", "b", "c", "d"])
    config = smoke_config()
    config["dataset"] = {"name": "t", "kind": "table", "table": table_section(path)}
    config["subsets"].update(size=2, count=6)
    config["clustering"]["n_clusters"] = 2
    validate(config, SCHEMA)
    with pytest.raises(ConfigError) as error:
        check_config(config)
    assert str(error.value) == (
        "config: evaluation.baselines lists 'planted' (as the default config does), but "
        "dataset.kind = 'table' has no planted groups (no known grouping of its tasks to "
        "compare with). Either drop 'planted' from evaluation.baselines "
        "(evaluation.baselines: ['naive_mtl', 'stl', 'random']), or name the known grouping: "
        "set dataset.table.groups_path (a table of task and group) and group_column"
    )
    config["evaluation"]["baselines"] = ["naive_mtl", "stl", "random"]
    check_config(config)
    groups = tmp_path / "groups.csv"
    groups.write_text("task,group\na,0\nb,0\nc,1\nd,1\n")
    config["dataset"]["table"].update(groups_path=str(groups), group_column="group")
    config["evaluation"]["baselines"] = ["planted"]
    check_config(config)


def test_planted_baseline_on_a_user_graph_names_community_groups(smoke, tmp_path):
    (tmp_path / "n.csv").write_text("node,feature_a,community_a,community_b,community_c\n")
    (tmp_path / "e.csv").write_text("source,target\n")
    smoke["dataset"] = {"name": "g", "kind": "graph_communities", "graph_communities": {
        "edges_path": str(tmp_path / "e.csv"), "nodes_path": str(tmp_path / "n.csv")}}
    smoke["subsets"].update(size=2, count=3)
    smoke["clustering"]["n_clusters"] = 2
    with pytest.raises(ConfigError, match=r"Either drop 'planted' .* set "
                                          r"dataset\.graph_communities\.community_groups"):
        check_config(smoke)


# --- features "auto" and the label ------------------------------------------------------------


def leaky_table(path: Path) -> Path:
    frame = pd.read_csv(csv_table(path, ["x", "y", "z"]), dtype={"task": str})
    rng = np.random.default_rng(1)
    frame["copy"] = frame["label"]
    frame["score"] = 3.0 * frame["label"] - 1.0 + rng.normal(scale=0.05, size=len(frame))
    frame.to_csv(path, index=False)
    return path


def test_features_auto_refuses_a_column_that_carries_the_label(tmp_path, caplog):
    path = leaky_table(tmp_path / "data.csv")
    with caplog.at_level(logging.INFO, logger="taskgroup.data.datasets.table"):
        with pytest.raises(
            DataError,
            match=r"data\.csv: on the 54 training rows, feature column\(s\) 'copy' equals it; "
                  r"'score' correlates with it at r = 0\.9996\d \(label column 'label'\): "
                  r"such a feature carries the label into the inputs \(a leak\)\. Leave it "
                  r"out \(dataset\.table\.exclude_columns\)",
        ):
            load_table(table_spec(table_section(path)))
    # the chosen features are logged before the checks
    assert "features ['a', 'b', 'copy', 'score'] (dataset.table.features = 'auto': every " \
           "numeric column but" in caplog.text
    examples, _ = load_table(table_spec(table_section(path, exclude_columns=["copy", "score"])))
    assert [c for c in examples.columns if c.startswith("feature_")] == ["feature_a", "feature_b"]


def test_an_explicit_feature_list_keeps_a_leaky_column_with_a_warning(tmp_path, caplog):
    path = leaky_table(tmp_path / "data.csv")
    with caplog.at_level(logging.WARNING, logger="taskgroup.data.datasets.table"):
        examples, _ = load_table(table_spec(table_section(path, features=["a", "copy"])))
    assert "feature_copy" in examples.columns
    assert "feature column(s) 'copy' equals it" in caplog.text
    assert "it is kept because dataset.table.features lists it" in caplog.text


@pytest.mark.parametrize(
    "make, kind",
    [
        (lambda frame: np.arange(len(frame)), "row number 0..149"),
        (lambda frame: np.arange(1, len(frame) + 1), "row number 1..150"),
        (lambda frame: 1000 + 7 * np.arange(len(frame)) ** 2, "increasing ids"),
        (lambda frame: -np.arange(len(frame)), "decreasing ids"),
        (lambda frame: frame.groupby("task").cumcount().to_numpy(),
         "row number within each task 0..n_t-1"),
    ],
)
def test_features_auto_refuses_a_column_that_counts_the_rows(tmp_path, caplog, make, kind):
    path = csv_table(tmp_path / "data.csv", ["x", "y", "z"], rows=50)
    frame = pd.read_csv(path, dtype={"task": str})
    frame.insert(0, "row", make(frame))
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=re.escape(
        f"{path}: feature column(s) 'row' ({kind}) count the file's 150 data rows in file "
        "order (a row number or a row id): such a column says where a row sits in the file, "
        "not what the example is. Leave it out (dataset.table.exclude_columns)"
    )):
        load_table(table_spec(table_section(path)))
    examples, _ = load_table(table_spec(table_section(path, exclude_columns=["row"])))
    assert [c for c in examples.columns if c.startswith("feature_")] == ["feature_a", "feature_b"]
    # an explicit list keeps it, with a warning
    with caplog.at_level(logging.WARNING, logger="taskgroup.data.datasets.table"):
        examples, _ = load_table(table_spec(table_section(path, features=["row", "a"])))
    assert "feature_row" in examples.columns
    assert f"'row' ({kind}) count the file's" in caplog.text
    assert "it is kept because dataset.table.features lists it" in caplog.text


def test_counts_that_do_not_follow_the_rows_are_features(tmp_path):
    path = csv_table(tmp_path / "data.csv", ["x", "y", "z"], rows=50)
    frame = pd.read_csv(path, dtype={"task": str})
    rng = np.random.default_rng(3)
    frame["shuffled"] = rng.permutation(len(frame))  # unique ids, not in file order
    frame["year"] = 2000 + np.arange(len(frame)) // 10  # sorted, but repeated
    frame["half"] = np.arange(len(frame)) + 0.5  # monotone, but not whole numbers
    counter = frame.groupby("task").cumcount().to_numpy()
    frame["uneven"] = np.where(frame["task"] == "z", counter + 1, counter)  # start differs
    frame.to_csv(path, index=False)
    examples, _ = load_table(table_spec(table_section(path)))
    assert {"feature_shuffled", "feature_year", "feature_half", "feature_uneven"} <= set(
        examples.columns
    )


# --- what the run decided, in the report ------------------------------------------------------


def test_the_run_decisions_table_lists_features_tasks_design_coverage_and_estimator(tmp_path):
    from taskgroup.data.designs import random_design
    from taskgroup.data.tables import RUN_DECISIONS, SUBSETS
    from taskgroup.report.evaluation import run_decisions
    from taskgroup.stages.prepare import prepare_dataset

    path = csv_table(tmp_path / "data.csv", ["a", "b", "c", "d", "e"])
    spec = table_spec(table_section(path, exclude_tasks=["c"], exclude_columns=["b"]))
    prepare_dataset("table", spec, tmp_path / "examples.parquet", tmp_path / "tasks.parquet",
                    tmp_path / "decisions.parquet")
    dataset = read_table(tmp_path / "decisions.parquet", RUN_DECISIONS)
    assert list(dataset.itertuples(index=False, name=None)) == [
        ("dataset_kind", "table"), ("feature", "feature_a"),
        ("task", "a"), ("task", "b"), ("task", "d"), ("task", "e"),
        ("excluded_task", "c"), ("task_type", "binary"),
    ]
    # 3 subsets of 2 out of the 4 kept tasks: 3 of the 6 pairs are covered once
    names = ["a", "b", "d", "e"]
    subsets = random_design(names, 2, 3, 0).assign(design="random")
    write_table(subsets, tmp_path / "random.parquet")
    decided = run_decisions(dataset, read_table(tmp_path / "random.parquet", SUBSETS), "gradient")
    assert list(decided.itertuples(index=False, name=None))[8:] == [
        ("estimator", "gradient"), ("random_design", "3 subsets of 2 tasks"),
        ("pair_coverage_mean", "0.5"), ("pair_coverage_min", "0"),
        ("pairs_in_no_subset", "3 of 6"),
    ]
    assert decided.iloc[:8].equals(dataset)
    # the planted generator: its features and every task; none left out
    config = smoke_config()
    validate(config, SCHEMA)
    section = config["dataset"]
    kind = DATASET_KINDS["planted"]
    spec = kind.spec({**section["planted"], "exclude_tasks": ["task_4"]})
    prepare_dataset("planted", spec, tmp_path / "e.parquet", tmp_path / "t.parquet",
                    tmp_path / "d.parquet")
    rows = read_table(tmp_path / "d.parquet", RUN_DECISIONS)
    counts = rows["item"].value_counts().to_dict()
    assert counts == {"dataset_kind": 1, "feature": section["planted"]["n_features"],
                      "task": 8, "excluded_task": 1, "task_type": 1}
    assert rows.loc[rows["item"] == "excluded_task", "value"].tolist() == ["task_4"]


# --- results deleted by hand -------------------------------------------------------------------


def test_missing_intermediates_are_found_from_snakemakes_records(tmp_path, monkeypatch):
    import base64
    import json

    from taskgroup.config import missing_intermediate_lines, missing_intermediates

    monkeypatch.chdir(tmp_path)
    metadata = tmp_path / ".snakemake" / "metadata"
    metadata.mkdir(parents=True)

    def record(output: str, inputs: list[str], split: int | None = None) -> None:
        name = base64.urlsafe_b64encode(output.encode()).decode()
        parts = [name] if split is None else ["@" + name[:split], name[split:]]
        path = metadata.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rule": "x", "input": inputs}))
        (tmp_path / output).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / output).write_text("x")

    record("results/r/data/tasks.parquet", ["data.csv", "taskgroup/x.py"])
    record("results/r/affinity/higher_order.parquet", ["results/r/data/tasks.parquet"])
    # a long name, cut into pieces as Snakemake does
    record("results/r/groupings/higher_order-sdp.parquet",
           ["results/r/affinity/higher_order.parquet", "results/r/data/tasks.parquet"], 10)
    record("results/other/groupings/a.parquet", ["results/other/affinity/gone.parquet"])
    (metadata / "not-base64!").write_text("{}")
    assert missing_intermediates(".snakemake/metadata", "results/r") == {}
    (tmp_path / "results/r/affinity/higher_order.parquet").unlink()
    (tmp_path / "results/r/data/tasks.parquet").unlink()
    missing = missing_intermediates(".snakemake/metadata", "results/r")
    assert missing == {
        "results/r/affinity/higher_order.parquet": ["results/r/groupings/higher_order-sdp.parquet"],
        "results/r/data/tasks.parquet": ["results/r/groupings/higher_order-sdp.parquet"],
    }
    assert missing_intermediate_lines(missing)[-1].endswith(
        "to regenerate (and rerun what is made from them): snakemake --cores 2 --forcerun "
        "results/r/affinity/higher_order.parquet results/r/data/tasks.parquet"
    )
    assert missing_intermediates(tmp_path / "absent", "results/r") == {}


@pytest.mark.workflow
@pytest.mark.parametrize(
    "deleted, rule",
    [
        ("results/smoke/affinity/higher_order.parquet", "higher_order_affinity"),
        ("results/smoke/meta_init/model.pt", "train_meta_init"),
    ],
)
def test_a_deleted_intermediate_is_rerun_or_the_dry_run_names_the_forcerun(
    shared_run, tmp_path, deleted, rule
):
    """Dry runs only, on a copy of the shared completed smoke run: Snakemake leaves a deleted
    intermediate missing when the files made from it are done, so the dry run names the
    --forcerun that writes it again, and that --forcerun schedules its rule and everything
    made from it."""
    import shutil

    from test_reruns import downstream
    from workflow_helpers import scheduled_jobs, snakemake_in_repository

    clone = tmp_path / "clone"
    shutil.copytree(shared_run, clone, symlinks=True)
    (clone / deleted).unlink()
    result = snakemake_in_repository(clone, "-n")
    output = result.stdout + result.stderr
    if rule not in scheduled_jobs(output):
        assert f"taskgroup: {deleted} is missing, but files made from it exist (" in output
        assert f"snakemake --cores 2 --forcerun {deleted}\n" in output
    forced = snakemake_in_repository(clone, "-n", "--forcerun", deleted)
    assert set(scheduled_jobs(forced.stdout + forced.stderr)) == downstream(rule)


# --- a second round of a new user's tables ------------------------------------------------------


def edited_table(tmp_path, edit, name="data.csv") -> Path:
    """The 4-task CSV table of :func:`csv_table` (columns task, a, b, label), edited by
    ``edit`` (frame -> frame) and written to ``name`` (CSV, or Parquet by its suffix)."""
    path = csv_table(tmp_path / "base.csv", ["p", "q", "r", "s"])
    frame = edit(pd.read_csv(path, dtype={"task": str}))
    target = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(target, index=False)
    else:
        frame.to_csv(target, index=False)
    return target


def with_column(column, make):
    def edit(frame):
        frame[column] = make(frame)
        return frame
    return edit


@pytest.mark.parametrize(
    "edit, overrides, message",
    [
        (with_column("label", lambda f: 2 * f["label"] - 1), {},
         r"column 'label' holds exactly two values, -1 and 1: with dataset\.table\.task_type "
         r"'auto' that is a regression target, .* recode them \(-1 -> 0, 1 -> 1\), or set "
         r"dataset\.table\.task_type: regression"),
        (with_column("a", lambda f: f["a"].map(lambda v: f"{v:.3f}".replace(".", ","))), {},
         r"column 'a' holds numbers written with a decimal comma \(such as '.*\(\d+ in all\)\); "
         r"features "
         r"'auto' takes numeric columns only and would leave it out"),
        (with_column("a", lambda f: f["a"].astype(str).where(f.index != 7, "?")), {},
         r"column 'a' holds numbers but for 1 of its 120 values \('\?'\), so it was read as "
         r"text; features 'auto' .* Replace those values"),
        (with_column("a", lambda f: 0.0 * f["a"] + 1.0), {"features": ["a"]},
         r"every feature column \('a'\) is constant on the 72 training rows: the inputs "
         r"carry no information"),
        (with_column("label", lambda f: 0.0 * f["label"] + 3.5), {},
         r"regression task\(s\) whose column 'label' is the same in every row: 'p' \(only label "
         r"3\.5 in 30 rows\), .*There is nothing to learn and R\^2 is undefined"),
        (lambda f: f, {"label_column": "task"},
         r"^dataset\.table: task_column, label_column and split_column must name different "
         r"columns; found task_column = 'task', label_column = 'task', split_column = None"),
        (lambda f: f.rename(columns={"b": "a"}), {},
         r"column name\(s\) \['a'\] appear more than once in the header; expected unique "
         r"column names"),
    ],
    ids=["labels -1/1", "decimal comma", "a '?' in numbers", "constant features",
         "constant regression label", "label column = task column", "repeated column name"],
)
def test_a_new_users_table_mistakes_are_named(tmp_path, edit, overrides, message):
    path = edited_table(tmp_path, edit)
    with pytest.raises(DataError, match=message):
        load_table(table_spec(table_section(path, **overrides)))


def test_repeated_names_in_parquet_a_semicolon_csv_and_a_folder_are_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [pa.array(["p", "q"]), pa.array([1.0, 2.0]), pa.array([3.0, 4.0]),
               pa.array([0.0, 1.0])]
    pq.write_table(pa.table(columns, names=["task", "a", "a", "label"]), tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"d\.parquet: column name\(s\) \['a'\] appear more "
                                        r"than once"):
        table_task_names(table_spec(table_section(tmp_path / "d.parquet")))
    semicolons = tmp_path / "semi.csv"
    semicolons.write_text("task;a;label\np;1,5;0\nq;2,5;1\n")
    with pytest.raises(DataError, match=re.escape(
        f"{semicolons}: the header is a single column name, 'task;a;label', holding "
        "semicolons: the file seems separated by semicolons, but a .csv file is read as "
        "separated by commas; save it with commas (or with tabs, named .tsv)"
    )):
        table_task_names(table_spec(table_section(semicolons)))
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError, match=r"folder\.csv: is a folder \(dataset\.table\.path\); "
                                        r"expected a Parquet or CSV file"):
        table_task_names(table_spec(table_section(tmp_path / "folder.csv")))
    # the pandas index written to a CSV file keeps its usual name, and is a row counter
    path = csv_table(tmp_path / "data.csv", ["p", "q"])
    pd.read_csv(path).to_csv(tmp_path / "indexed.csv")
    with pytest.raises(DataError, match=r"feature column\(s\) 'Unnamed: 0' \(row number "
                                        r"0\.\.59\) count the file's 60 data rows"):
        load_table(table_spec(table_section(tmp_path / "indexed.csv")))


def test_a_dataset_of_one_task_is_refused_at_parse_time(tmp_path):
    config = smoke_config()
    config["dataset"] = {"name": "one", "kind": "table",
                         "table": table_section(csv_table(tmp_path / "d.csv", ["solo"]))}
    config["evaluation"]["baselines"] = ["naive_mtl", "stl"]
    validate(config, SCHEMA)
    with pytest.raises(ConfigError, match=r"config: the dataset \(dataset\.kind: table\) has "
                                          r"k = 1 task: grouping tasks needs at least 2"):
        check_config(config)


def test_graph_node_ids_written_as_whole_floats_match_integer_ids(tmp_path):
    edges, nodes = generate_graph(GraphCommunitySpec(n_blocks=2, communities_per_block=2,
                                                     nodes_per_community=15, n_features=4))
    nodes = nodes.drop(columns="block")
    nodes.to_csv(tmp_path / "nodes.csv", index=False)
    edges.to_csv(tmp_path / "int_edges.csv", index=False)
    edges.astype(float).to_csv(tmp_path / "float_edges.csv", index=False)  # 7.0 for 7
    whole = load_graph(tmp_path / "int_edges.csv", tmp_path / "nodes.csv")
    floats = load_graph(tmp_path / "float_edges.csv", tmp_path / "nodes.csv")
    pd.testing.assert_frame_equal(whole[0], floats[0])
    assert len(whole[0]) == len(edges)


def test_a_number_in_exponent_notation_without_a_point_is_named(smoke, tmp_path):
    """YAML (as Snakemake reads it) takes lr: 1e-3 for the text '1e-3'."""
    from taskgroup.config import check_number_texts

    schema = yaml.safe_load(Path(SCHEMA).read_text())
    path = tmp_path / "c.yaml"
    path.write_text("final:\n  lr: 1e-3\nsubsets:\n  size: 3\n")
    loaded = yaml.safe_load(path.read_text())
    assert loaded["final"]["lr"] == "1e-3"
    smoke["final"]["lr"] = loaded["final"]["lr"]
    with pytest.raises(ConfigError, match=re.escape(
        "config: final.lr = '1e-3' is text, not a number: YAML reads a number in exponent "
        "notation only with a decimal point; write 1.0e-3 (or 0.001)"
    )):
        check_number_texts(smoke, schema)
    smoke["final"]["lr"] = 1.0e-3
    # meta_init: the shared training fields and its own key, behind two $refs
    smoke["meta_init"]["lr"] = "1e-2"
    with pytest.raises(ConfigError, match=r"meta_init\.lr = '1e-2' is text"):
        check_number_texts(smoke, schema)
    smoke["meta_init"]["lr"] = 0.01
    smoke["dataset"]["planted"]["label_noise"] = ["5e-2"]  # in a list, behind a oneOf
    with pytest.raises(ConfigError, match=r"dataset\.planted\.label_noise\[0\] = '5e-2'"):
        check_number_texts(smoke, schema)
    smoke["dataset"]["planted"]["label_noise"] = 0.05
    # a number or the word auto: no word looks like a number
    smoke["gradient_estimate"]["l2"] = "3e-2"
    with pytest.raises(ConfigError, match=r"gradient_estimate\.l2 = '3e-2' is text"):
        check_number_texts(smoke, schema)
    smoke["gradient_estimate"]["l2"] = "auto"
    check_number_texts(smoke, schema)
    smoke["finetune"]["lr"] = "3e-3"
    with pytest.raises(ConfigError, match=r"finetune\.lr = '3e-3' is text"):
        check_number_texts(smoke, schema)
    smoke["finetune"]["lr"] = "auto"
    smoke["finetune"]["lr_candidates"] = [0.01, "1e-3"]
    with pytest.raises(ConfigError, match=r"finetune\.lr_candidates\[1\] = '1e-3' is text"):
        check_number_texts(smoke, schema)
    smoke["finetune"]["lr_candidates"] = [0.01, 0.001]
    check_number_texts(smoke, schema)
    # where text is allowed, such a value is a name
    smoke["dataset"]["name"] = "1e5"
    smoke["dataset"]["planted"]["exclude_tasks"] = ["1e5"]
    check_number_texts(smoke, schema)
