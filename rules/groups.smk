# Which group models to train: the groupings are written by checkpoints, so the distinct
# groups (sets of tasks, keyed by a hash of their members) are only known once those have
# run. Every train_group_models job and the evaluation ask these functions.
import pandas as pd

from taskgroup.group.groupings import group_keys


def grouping_file(dataset, grouping):
    """The grouping table of ``grouping``, after the checkpoint that writes it has run."""
    if grouping in CLUSTERED:
        source, method = grouping.split("-")
        job = checkpoints.cluster_tasks.get(dataset=dataset, source=source)
        return job.output.groupings[METHODS.index(method)]
    if grouping in RANDOM:
        return checkpoints.random_grouping.get(dataset=dataset).output[
            RANDOM.index(grouping)
        ]
    return checkpoints.baseline_grouping.get(dataset=dataset, grouping=grouping).output[
        0
    ]


_MEMBERS_CACHE = {}


def group_members_by_key(dataset):
    """group_key -> sorted member tasks over every grouping table of ``dataset`` on disk.

    Read once per state of the tables (their paths and modification times), not once per
    job: every train_group_models job asks for its groups at DAG-building time, and the
    tables change only when a checkpoint rewrites them."""
    paths = [
        Path(f"results/{dataset}/groupings/{grouping}.parquet")
        for grouping in GROUPINGS
    ]
    state = tuple(
        (str(path), path.stat().st_mtime_ns) for path in paths if path.exists()
    )
    if state not in _MEMBERS_CACHE:
        members = {}
        for path, _ in state:
            table = group_keys(pd.read_parquet(path))
            for key, tasks in table.groupby("group_key")["task"]:
                members.setdefault(key, sorted(tasks))
        _MEMBERS_CACHE.clear()
        _MEMBERS_CACHE[state] = members
    return _MEMBERS_CACHE[state]


def group_batches(dataset):
    """batch -> {group key: members}: the distinct groups over every grouping, cut into
    evaluation.training_jobs batches by their key (a hash of the members), so that a new
    group changes one batch only. Batches without a group are left out."""
    batches = {}
    for key, members in sorted(group_members_by_key(dataset).items()):
        batch = int(key, 16) % config["evaluation"]["training_jobs"]
        batches.setdefault(batch, {})[key] = members
    return batches


def group_model_files(wildcards, kind="results"):
    """The group results of every batch of distinct groups (set of tasks) over every
    grouping, per variant: groups that several groupings share are trained once. ``kind``:
    "results" (the group results tables) or "diagnostics"."""
    # Asking for every grouping's file waits for the checkpoints that write them.
    for grouping in GROUPINGS:
        grouping_file(wildcards.dataset, grouping)
    pattern = {
        "results": "results/{dataset}/final/{variant}/batch_{batch}.parquet",
        "diagnostics": "results/{dataset}/final/{variant}/batch_{batch}_diagnostics.parquet",
    }[kind]
    return expand(
        pattern,
        dataset=wildcards.dataset,
        variant=VARIANTS,
        batch=sorted(group_batches(wildcards.dataset)),
    )


def group_diagnostics_files(wildcards):
    return group_model_files(wildcards, "diagnostics")


def grouping_files(wildcards):
    return {
        grouping: f"results/{wildcards.dataset}/groupings/{grouping}.parquet"
        for grouping in GROUPINGS
    }
