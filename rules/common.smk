import pandas as pd
from snakemake.utils import validate

from taskgroup.config import check_config
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
    estimator="finetune",


def sorted_params(mapping):
    """A config section with its keys sorted: Snakemake compares params: by their text, so
    reordering keys in the config file must not look like a change."""
    return {key: mapping[key] for key in sorted(mapping)}


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
        ],
        dataset=DATASET,
    )
