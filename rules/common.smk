import ast
import os
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

from taskgroup.config import check_config, dataset_files, dataset_section
from taskgroup.subsets import n_chunks

validate(config, schema="../config/config.schema.yaml")
check_config(config)

DATASET = config["dataset"]["name"]
GROUPINGS = ["clustered"] + config["evaluation"]["baselines"]
CHUNKS = list(
    range(n_chunks(config["subsets"]["count"], config["subsets"]["chunk_size"]))
)


wildcard_constraints:
    dataset=DATASET,
    chunk=r"\d+",
    group=r"\d+",
    grouping="|".join(GROUPINGS),
    estimator="finetune|gradient",


LIBRARY = "taskgroup"
REPOSITORY = Path(workflow.basedir)


def _library_file(module):
    """The source file of library module ``module`` (dotted name), or None."""
    parts = module.split(".")
    if parts[0] != LIBRARY:
        return None
    base = REPOSITORY.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_library_files(source, package):
    """Library files imported anywhere in ``source`` (also inside functions), with the
    ``__init__.py`` of every package on the way, since importing a module runs them."""
    modules = set()
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative to ``package``, the importer's __package__
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module
            modules.add(base)
            modules.update(f"{base}.{alias.name}" for alias in node.names)
    files = set()
    for module in modules:
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):
            path = _library_file(".".join(parts[:depth]))
            if path is not None:
                files.add(path)
    return files


def library_code(script):
    """The library source files that ``workflow_scripts/<script>`` imports, directly or
    through other library modules, found by parsing the imports (ast) at parse time.

    Each job lists them as its ``code`` input, because Snakemake's code trigger only
    watches the script file itself, so an edit to the library would otherwise leave
    stale results. As inputs, the files rerun a job when their content changes (checksum;
    a newer mtime with the same bytes reruns nothing), and they enter the provenance hash
    of the between-workflow cache."""
    seen = set()
    pending = [(REPOSITORY / "workflow_scripts" / script, "")]
    while pending:
        source, package = pending.pop()
        for path in _imported_library_files(source, package):
            if path not in seen:
                seen.add(path)
                package = path.relative_to(REPOSITORY).parent
                pending.append((path, ".".join(package.parts)))
    return sorted(os.path.relpath(path) for path in seen)


def sorted_params(mapping):
    """A config section with its keys sorted: Snakemake compares params: by their text, so
    reordering keys in the config file must not look like a change."""
    return {key: mapping[key] for key in sorted(mapping)}


def sorted_deep(value):
    """``value`` with the keys of every mapping in it sorted (see sorted_params)."""
    if isinstance(value, dict):
        return {key: sorted_deep(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sorted_deep(item) for item in value]
    return value


def dataset_params():
    """The section of the configured dataset kind (dataset.<kind>), keys sorted at every
    level: only the active kind's settings change the prepared data."""
    return sorted_deep(dataset_section(config["dataset"]))


def dataset_inputs():
    """The user's data files (table, groups, graph), so that editing them reruns the
    preparation; none for the generators."""
    return dataset_files(config["dataset"])


def training_params(section):
    """The training settings of a config section, as a plain dict for params:."""
    settings = config[section]
    return {
        "epochs": settings["epochs"],
        "lr": settings["lr"],
        "batch_size": settings["batch_size"],
        "weight_decay": settings.get("weight_decay", 0.0),
    }


def subset_value_chunks(wildcards):
    """Every chunk of the per-subset stage for the configured subsets."""
    return expand(
        "results/{dataset}/subset_values/{estimator}/chunk_{chunk}.parquet",
        dataset=wildcards.dataset,
        estimator=wildcards.estimator,
        chunk=CHUNKS,
    )


def grouping_file(dataset, grouping):
    """The grouping table of ``grouping``, after the checkpoint that writes it has run."""
    if grouping == "clustered":
        return checkpoints.cluster_tasks.get(dataset=dataset).output.grouping
    return checkpoints.baseline_grouping.get(dataset=dataset, grouping=grouping).output[
        0
    ]


def group_result_files(wildcards):
    """One result file per group of every grouping (clusters and baselines)."""
    paths = []
    for grouping in GROUPINGS:
        groups = sorted(
            pd.read_parquet(grouping_file(wildcards.dataset, grouping))["group"]
        )
        paths += expand(
            "results/{dataset}/final/{grouping}/group_{group}.parquet",
            dataset=wildcards.dataset,
            grouping=grouping,
            group=sorted(set(groups)),
        )
    return paths


def grouping_files(wildcards):
    return {
        grouping: f"results/{wildcards.dataset}/groupings/{grouping}.parquet"
        for grouping in GROUPINGS
    }


def final_outputs():
    return expand(
        [
            "results/{dataset}/evaluation/summary.parquet",
            "results/{dataset}/evaluation/per_task.parquet",
            "results/{dataset}/evaluation/affinity_heatmap.png",
            "results/{dataset}/evaluation/per_task_metric.png",
            "results/{dataset}/affinity/affinity.parquet",
            "results/{dataset}/subsets/pair_counts.parquet",
            "results/{dataset}/meta_init/val_metrics.parquet",
        ]
        + (
            [
                "results/{dataset}/validation/summary.parquet",
                "results/{dataset}/validation/estimator_validation.png",
            ]
            if config["estimator"] == "gradient"
            else []
        ),
        dataset=DATASET,
    )


# Cheap steps that only read and write small tables: on a cluster they run in the main
# Snakemake process instead of being submitted as jobs (no effect on local runs).
localrules:
    sample_subsets,
    gather_subset_values,
    compute_affinity,
    cluster_tasks,
    baseline_grouping,
    evaluate_groupings,
    plot_figures,
