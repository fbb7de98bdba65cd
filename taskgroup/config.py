"""Checks of the workflow config that a JSON schema cannot express (cross-key constraints).

The schema (``config/config.schema.yaml``) checks keys, types and ranges; these functions
check what depends on several keys, e.g. that the subset size does not exceed the number
of tasks. Both run when Snakemake parses the workflow, before any job starts.
"""

from __future__ import annotations

import importlib.util

from taskgroup.data.datasets.planted import PlantedSpec
from taskgroup.data.datasets.table import table_spec, table_task_names
from taskgroup.data.designs import check_subset_design
from taskgroup.data.task_types import check_metric
from taskgroup.group.groupings import BASELINES, check_n_clusters


class ConfigError(ValueError):
    """A config value that is valid on its own but inconsistent with the others."""


def planted_spec(planted: dict) -> PlantedSpec:
    """The generator spec from the ``dataset.planted`` config section."""
    return PlantedSpec(**planted)


def graph_module():
    """The graph-community dataset module, or ConfigError if this version lacks it."""
    if importlib.util.find_spec("taskgroup.data.datasets.graph") is None:
        raise ConfigError(
            "config: dataset.kind = 'graph_communities' is not available in this version "
            "(taskgroup/data/datasets/graph.py is missing); use 'planted' or 'table'"
        )
    import taskgroup.data.datasets.graph as graph

    return graph


def n_tasks(config: dict) -> int:
    """The number of tasks k that the configured dataset will have. For ``table`` only the
    task column is read (and checked: task names, the ``tasks`` list)."""
    dataset = config["dataset"]
    if dataset["kind"] == "planted":
        return planted_spec(dataset["planted"]).n_tasks
    if dataset["kind"] == "table":
        return len(table_task_names(table_spec(dataset["table"])))
    if dataset["kind"] == "graph_communities":
        return graph_module().graph_n_tasks(dataset["graph_communities"])
    raise ConfigError(f"dataset.kind = {dataset['kind']!r} is not supported")


def has_planted_groups(dataset: dict) -> bool:
    """Whether the configured dataset knows a grouping of its tasks (the tasks table's
    planted_group): the generators do, a user table when it names groups_path."""
    if dataset["kind"] == "table":
        return dataset["table"].get("groups_path") is not None
    if dataset["kind"] == "graph_communities":
        return graph_module().graph_has_planted_groups(dataset["graph_communities"])
    return dataset["kind"] == "planted"


def declared_task_type(dataset: dict) -> str | None:
    """The task type every task has, when the config alone tells it (the generators make
    binary tasks; a table with an explicit task_type); None when only the data can."""
    if dataset["kind"] == "table":
        declared = dataset["table"].get("task_type", "auto")
        return None if declared == "auto" else declared
    return "binary"


def dataset_section(dataset: dict) -> dict:
    """The config section of the configured dataset kind (``dataset.<kind>``)."""
    return dataset[dataset["kind"]]


def dataset_files(dataset: dict) -> list[str]:
    """The data files the configured dataset reads (inputs of the preparation)."""
    section = dataset_section(dataset)
    keys = {
        "planted": [],
        "table": ["path", "groups_path"],
        "graph_communities": ["edges_path", "nodes_path"],
    }[dataset["kind"]]
    return [section[key] for key in keys if section.get(key) is not None]


def check_config(config: dict) -> None:
    """Raise ConfigError, naming the key, if the config's values are inconsistent."""
    k = n_tasks(config)
    task_type = declared_task_type(config["dataset"])
    if task_type is not None:
        try:
            check_metric(config["evaluation"].get("metric", "auto"), [task_type])
        except ValueError as error:
            raise ConfigError(str(error)) from None
    subsets = config["subsets"]
    try:
        check_subset_design(k, subsets["size"], subsets["count"])
    except ValueError as error:
        raise ConfigError(f"config: {error}") from None
    forward = forward_selection_settings(config)
    if forward is not None and not 1 <= forward["max_size"] <= k:
        raise ConfigError(
            f"config: subsets.forward_selection.max_size = {forward['max_size']} must be "
            f"between 1 and the number of tasks k = {k} (it counts the target task)"
        )
    clustering = config["clustering"]
    n_clusters = clustering["n_clusters"]
    if n_clusters != "auto":
        try:
            check_n_clusters(n_clusters, k)
        except ValueError as error:
            raise ConfigError(f"config: {error}") from None
    if n_clusters == "auto" and k < 3:
        raise ConfigError(
            f"config: clustering.n_clusters = 'auto' needs at least 3 tasks; k = {k}"
        )
    baselines = config["evaluation"]["baselines"]
    unknown = sorted(set(baselines) - set(BASELINES) - {"random"})
    if unknown:
        raise ConfigError(
            f"config: evaluation.baselines has {unknown}; expected a subset of "
            f"{list(BASELINES) + ['random']}"
        )
    if "planted" in baselines and not has_planted_groups(config["dataset"]):
        raise ConfigError(
            "config: evaluation.baselines lists 'planted', but dataset.kind = "
            f"{config['dataset']['kind']!r} has no planted groups (for a table: set "
            "dataset.table.groups_path and group_column)"
        )


def forward_selection_settings(config: dict) -> dict | None:
    """The ``subsets.forward_selection`` section (enabled, max_size, min_improvement) when
    forward selection is enabled, else None (also when the section is absent)."""
    section = config["subsets"].get("forward_selection") or {}
    return section if section.get("enabled", False) else None


def needs_pair_design(config: dict) -> bool:
    """Whether the singletons-and-pairs design must be valued: for the pairwise affinity
    source, or as the ground truth that the surrogates' negative-transfer calls are scored on."""
    return "pairwise" in config["affinity"]["sources"] or config["surrogates"]["enabled"]


def pair_design_size(n_tasks: int) -> int:
    """k singletons + k (k - 1) / 2 pairs."""
    return n_tasks + n_tasks * (n_tasks - 1) // 2
