"""Checks of the workflow config that a JSON schema cannot express (cross-key constraints).

The schema (``config/config.schema.yaml``) checks keys, types and ranges; these functions
check what depends on several keys, e.g. that the subset size does not exceed the number
of tasks. Both run when Snakemake parses the workflow, before any job starts.
"""

from __future__ import annotations

from taskgroup.datasets.planted import PlantedSpec
from taskgroup.groupings import BASELINES
from taskgroup.subsets import check_subset_design


class ConfigError(ValueError):
    """A config value that is valid on its own but inconsistent with the others."""


def planted_spec(planted: dict) -> PlantedSpec:
    """The generator spec from the ``dataset.planted`` config section."""
    return PlantedSpec(**planted)


def n_tasks(config: dict) -> int:
    """The number of tasks k that the configured dataset will have."""
    dataset = config["dataset"]
    if dataset["kind"] == "planted":
        return planted_spec(dataset["planted"]).n_tasks
    raise ConfigError(f"dataset.kind = {dataset['kind']!r} is not supported")


def check_config(config: dict) -> None:
    """Raise ConfigError, naming the key, if the config's values are inconsistent."""
    k = n_tasks(config)
    subsets = config["subsets"]
    try:
        check_subset_design(k, subsets["size"], subsets["count"])
    except ValueError as error:
        raise ConfigError(f"config: {error}") from None
    clustering = config["clustering"]
    n_clusters = clustering["n_clusters"]
    if n_clusters != "auto" and n_clusters > k:
        raise ConfigError(
            f"config: clustering.n_clusters = {n_clusters} exceeds the number of tasks k = {k}"
        )
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
    if "planted" in baselines and config["dataset"]["kind"] != "planted":
        raise ConfigError(
            "config: evaluation.baselines lists 'planted', but dataset.kind = "
            f"{config['dataset']['kind']!r} has no planted groups"
        )


def needs_pair_design(config: dict) -> bool:
    """Whether the singletons-and-pairs design must be valued: for the pairwise affinity
    source, or as the ground truth that the surrogates' negative-transfer calls are scored on."""
    return "pairwise" in config["affinity"]["sources"] or config["surrogates"]["enabled"]


def pair_design_size(n_tasks: int) -> int:
    """k singletons + k (k - 1) / 2 pairs."""
    return n_tasks + n_tasks * (n_tasks - 1) // 2
