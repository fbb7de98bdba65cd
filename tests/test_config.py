import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from taskgroup.config import ConfigError, check_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "config" / "config.schema.yaml")


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_default_config_is_valid(config):
    validate(config, SCHEMA)
    check_config(config)


def test_subset_size_above_task_count_is_rejected(config):
    config["subsets"]["size"] = 31
    with pytest.raises(ConfigError, match=r"subsets.size \(alpha\) = 31 .* k = 30"):
        check_config(config)


def test_more_subsets_than_exist_is_rejected(config):
    config["subsets"]["size"] = 29
    with pytest.raises(ConfigError, match=r"subsets.count \(m\) = 600 exceeds the 30"):
        check_config(config)


def test_flow_steps_with_newton_steps_are_rejected(config):
    config["gradient_estimate"].update(flow_steps=4, newton_steps=2)
    with pytest.raises(ConfigError, match="flow_steps = 4 and newton_steps = 2"):
        check_config(config)


def test_more_clusters_than_tasks_is_rejected(config):
    config["clustering"]["n_clusters"] = 40
    with pytest.raises(ConfigError, match="clustering.n_clusters = 40 exceeds .* k = 30"):
        check_config(config)


def test_forward_selection_larger_than_the_task_count_is_rejected_only_when_enabled(config):
    config["subsets"]["forward_selection"].update(max_size=31)
    check_config(config)  # disabled: the size is not used
    config["subsets"]["forward_selection"].update(enabled=True)
    with pytest.raises(
        ConfigError,
        match=r"subsets.forward_selection.max_size = 31 must be between 1 and the number of "
        r"tasks k = 30",
    ):
        check_config(config)


def test_forward_selection_defaults_fill_in_when_the_section_is_absent(config):
    del config["subsets"]["forward_selection"]
    validate(config, SCHEMA)
    assert config["subsets"]["forward_selection"] == {
        "enabled": False, "max_size": 5, "min_improvement": 0.0,
    }


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["dataset"]["planted"].update(n_train=-5), "-5 is less than the minimum"),
        (lambda c: c["subsets"].update(sizes=3), "Additional properties are not allowed"),
        (lambda c: c.update(estimater="finetune"), "Additional properties are not allowed"),
        (lambda c: c["clustering"].update(methods=["kmeans"]), "'kmeans' is not one of"),
        (lambda c: c["subsets"]["forward_selection"].update(max_size=0),
         "0 is less than the minimum of 1"),
        (lambda c: c["subsets"]["forward_selection"].update(steps=3),
         "Additional properties are not allowed"),
        # the training sections: the shared fields, plus meta_init's own key
        (lambda c: c["finetune"].update(keep_best_epoch=True),
         r"Unevaluated properties are not allowed \('keep_best_epoch' was unexpected\)"),
        (lambda c: c["meta_init"].update(epoch=3),
         r"Unevaluated properties are not allowed \('epoch' was unexpected\)"),
        (lambda c: c["meta_init"].update(keep_best_epoch="yes"), "'yes' is not of type"),
        (lambda c: c["gradient_estimate"].update(l2="big"), "'big' is not valid under any"),
        # finetune.lr: a number or auto; the other training sections: a number only
        (lambda c: c["finetune"].update(lr="fast"), "'fast' is not valid under any"),
        (lambda c: c["finetune"].update(lr_candidates=[0.01, 0]),
         "0 is less than or equal to the minimum of 0"),
        (lambda c: c["meta_init"].update(lr="auto"), "'auto' is not of type 'number'"),
        (lambda c: c["final"].update(lr="auto"), "'auto' is not of type 'number'"),
        (lambda c: c["final"].update(lr_candidates=[0.01]),
         r"Unevaluated properties are not allowed \('lr_candidates' was unexpected\)"),
    ],
)
def test_schema_rejects_bad_values(config, mutate, message):
    bad = copy.deepcopy(config)
    mutate(bad)
    with pytest.raises(Exception, match=message):
        validate(bad, SCHEMA)
