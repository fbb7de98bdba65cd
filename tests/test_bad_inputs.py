"""Bad inputs give a message that names the key, file or column, the value found and what is
expected, at the earliest moment (issue 13): degenerate designs and bad names at parse time,
the user's files when they are read, corrupt intermediates and diverging trainings in the
stages."""

import copy
import re
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate
from workflow_helpers import make_workdir, smoke_config, snakemake

from taskgroup.config import MIN_PAIR_COVERAGE, ConfigError, check_config
from taskgroup.data.designs import expected_pair_count

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
