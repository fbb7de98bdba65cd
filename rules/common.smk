import ast
import os
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

from taskgroup.config import (
    check_config,
    dataset_files,
    dataset_section,
    forward_selection_settings,
    n_tasks,
    needs_pair_design,
    pair_design_size,
)
from taskgroup.group.groupings import group_keys
from taskgroup.data.designs import n_chunks
from taskgroup.models.options import enabled_options, variant_options

validate(config, schema="../config/config.schema.yaml")
check_config(config)

DATASET = config["dataset"]["name"]
N_TASKS = n_tasks(config)
# The random design of subsets.* feeds the higher-order affinity and the surrogates; the
# singletons-and-pairs design is valued too when a pairwise affinity or the surrogates'
# negative-transfer ground truth needs it.
DESIGN_SIZES = {"random": config["subsets"]["count"]}
if needs_pair_design(config):
    DESIGN_SIZES["pairs"] = pair_design_size(N_TASKS)
CHUNKS = {
    design: list(range(n_chunks(size, config["subsets"]["chunk_size"])))
    for design, size in DESIGN_SIZES.items()
}
# Forward selection (subsets.forward_selection; None when off): greedy per target, valued
# by the configured estimator in one job, compared with the surrogates' selected sources.
FORWARD = forward_selection_settings(config)
SOURCES = config["affinity"]["sources"]
METHODS = config["clustering"]["methods"]
CLUSTERED = [f"{source}-{method}" for source in SOURCES for method in METHODS]
PRIMARY = CLUSTERED[0]
BASELINES = [name for name in config["evaluation"]["baselines"] if name != "random"]
RANDOM = (
    [f"random_{index}" for index in range(config["evaluation"]["random_partitions"])]
    if "random" in config["evaluation"]["baselines"]
    else []
)
GROUPINGS = CLUSTERED + BASELINES + RANDOM
# Trainings of every group model (training_options.final.variants); the first is the one
# the figures show.
FINAL_OPTIONS = config.get("training_options", {}).get("final", {})
VARIANTS = FINAL_OPTIONS.get("variants", ["plain"])
COMPARE_VARIANTS = "plain" in VARIANTS and len(VARIANTS) > 1
FINAL_DIAGNOSTICS = FINAL_OPTIONS.get("diagnostics", {}).get("enabled", False)
TRAINING_SEEDS = [
    config["final"]["seed"] + offset
    for offset in range(config["evaluation"]["n_seeds"])
]


wildcard_constraints:
    dataset=DATASET,
    chunk=r"\d+",
    design="random|pairs",
    estimator="finetune|gradient",
    source="|".join(SOURCES),
    method="|".join(METHODS),
    grouping="|".join(GROUPINGS),
    variant="|".join(VARIANTS),
    key=r"[0-9a-f]{16}",


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


def meta_init_options():
    """The enabled options of training_options.meta_init, with their defaults filled in,
    as params: {"options": {...}}; nothing when every option is off, so that the default
    (plain) training job keeps its params and outputs."""
    options = enabled_options(config.get("training_options", {}).get("meta_init", {}))
    return {"options": options} if options else {}


def meta_init_option_outputs():
    """The extra Parquet outputs of the meta-initialization: task_weights (reweighting)
    and diagnostics (diagnostics), each only when its option is on."""
    options = meta_init_options().get("options", {})
    outputs = {}
    if "reweighting" in options:
        outputs["weights"] = "results/{dataset}/meta_init/task_weights.parquet"
    if "diagnostics" in options:
        outputs["diagnostics"] = "results/{dataset}/meta_init/diagnostics.parquet"
    return outputs


def final_variant_options(wildcards):
    """The enabled options of the final-training variant {variant} (settings from
    training_options.final; see taskgroup.models.options.variant_options)."""
    return variant_options(FINAL_OPTIONS, wildcards.variant)


def final_diagnostics_output():
    """The diagnostics output of a group model job, when training_options.final.diagnostics
    is on."""
    if FINAL_DIAGNOSTICS:
        return {
            "diagnostics": "results/{dataset}/final/{variant}/{key}/diagnostics.parquet"
        }
    return {}


def clustering_params():
    """The fields of ClusteringSettings (the config section without the methods, which
    each rule names itself), shared by cluster_tasks and validate_estimator; the schema
    fills in the defaults."""
    return {
        key: config["clustering"][key]
        for key in ("similarity", "rounding", "n_clusters", "max_clusters", "seed")
    }


def surrogate_params():
    """The fields of SurrogateSettings: the config section without "enabled" (the schema
    fills in the defaults), keys sorted."""
    return sorted_params(
        {key: value for key, value in config["surrogates"].items() if key != "enabled"}
    )


def subset_value_chunks(wildcards):
    """Every chunk of the per-subset stage for one design."""
    return expand(
        "results/{dataset}/subset_values/{estimator}/{design}/chunk_{chunk}.parquet",
        dataset=wildcards.dataset,
        estimator=wildcards.estimator,
        design=wildcards.design,
        chunk=CHUNKS[wildcards.design],
    )


def subset_values(design):
    """The gathered per-subset values of ``design`` under the configured estimator."""
    return f"results/{{dataset}}/subset_values/{config['estimator']}/{design}.parquet"


def estimator_inputs():
    """The inputs of a job that values subsets itself with the configured estimator: the
    projected gradients (gradient) or the examples (finetune), besides the tasks table and
    the meta-initialization that both need."""
    if config["estimator"] == "gradient":
        return {
            "projected": "results/{dataset}/gradients/projected.parquet",
            "projection": "results/{dataset}/gradients/projection.parquet",
        }
    return {"examples": "results/{dataset}/data/examples.parquet"}


def estimator_params():
    """The configured estimator's settings, for params: (only the active one's, so that
    the other's keys do not rerun the job): gradient_estimate (gradient), or the fine-tuning
    and its seed (finetune)."""
    if config["estimator"] == "gradient":
        return {"estimate": sorted_params(config["gradient_estimate"])}
    return {"training": training_params("finetune"), "seed": config["finetune"]["seed"]}


def forward_comparison_inputs():
    """fit_surrogates' forward-selection table, when forward selection is enabled."""
    if FORWARD is None:
        return {}
    return {"forward": "results/{dataset}/surrogates/forward_selection.parquet"}


def forward_comparison_outputs():
    """fit_surrogates' comparison with forward selection, when it is enabled."""
    if FORWARD is None:
        return {}
    return {"comparison": "results/{dataset}/surrogates/forward_comparison.parquet"}


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
    job: every train_group_model job asks for its members at DAG-building time, and the
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


def group_model_files(wildcards, kind="results"):
    """One file per distinct group (set of tasks) over every grouping and per variant:
    groups that several groupings share are trained once. ``kind``: "results" (the group
    results tables) or "diagnostics"."""
    # Asking for every grouping's file waits for the checkpoints that write them.
    for grouping in GROUPINGS:
        grouping_file(wildcards.dataset, grouping)
    pattern = {
        "results": "results/{dataset}/final/{variant}/{key}.parquet",
        "diagnostics": "results/{dataset}/final/{variant}/{key}/diagnostics.parquet",
    }[kind]
    return expand(
        pattern,
        dataset=wildcards.dataset,
        variant=VARIANTS,
        key=sorted(group_members_by_key(wildcards.dataset)),
    )


def group_diagnostics_files(wildcards):
    return group_model_files(wildcards, "diagnostics")


def group_members(wildcards):
    """The member tasks of group ``key``, found in the grouping tables on disk (they exist:
    the group's job is only requested once every grouping has been written)."""
    members = group_members_by_key(wildcards.dataset).get(wildcards.key)
    if members is None:
        raise ValueError(
            f"no grouping table under results/{wildcards.dataset}/groupings/ has a group "
            f"with key {wildcards.key}; run the workflow from its final target instead"
        )
    return members


def grouping_files(wildcards):
    return {
        grouping: f"results/{wildcards.dataset}/groupings/{grouping}.parquet"
        for grouping in GROUPINGS
    }


def affinity_files(wildcards):
    return {
        source: f"results/{wildcards.dataset}/affinity/{source}.parquet"
        for source in SOURCES
    }


def variant_comparison_outputs():
    """The comparison tables of the final-training variants, when there is one to make."""
    if not COMPARE_VARIANTS:
        return {}
    return {
        "variants": "results/{dataset}/evaluation/variants.parquet",
        "variant_changes": "results/{dataset}/evaluation/variant_changes.parquet",
        "variants_html": report(
            "results/{dataset}/evaluation/variants.html",
            caption="../report/variants_table.rst",
            category="Within-group training",
        ),
    }


def final_outputs():
    outputs = [
        "results/{dataset}/evaluation/summary.parquet",
        "results/{dataset}/evaluation/per_task.parquet",
        "results/{dataset}/evaluation/affinity_heatmap.png",
        "results/{dataset}/evaluation/gain_over_naive_mtl.png",
        "results/{dataset}/clustering/objective.parquet",
        "results/{dataset}/clustering/objective.png",
        "results/{dataset}/subsets/pair_counts.parquet",
        "results/{dataset}/meta_init/val_metrics.parquet",
    ]
    if COMPARE_VARIANTS:
        outputs += [
            "results/{dataset}/evaluation/variants.parquet",
            "results/{dataset}/evaluation/variant_changes.png",
        ]
    if FINAL_DIAGNOSTICS:
        outputs += [
            "results/{dataset}/evaluation/generalization_gap.parquet",
            "results/{dataset}/evaluation/transfer_diagnostics.png",
        ]
    if config["surrogates"]["enabled"]:
        outputs += [
            "results/{dataset}/surrogates/coefficients.parquet",
            "results/{dataset}/surrogates/negative_transfer.parquet",
            "results/{dataset}/surrogates/coefficients.png",
        ]
    if FORWARD is not None:
        outputs += [
            subset_values("forward"),
            "results/{dataset}/surrogates/forward_selection.parquet",
        ]
        if config["surrogates"]["enabled"]:
            outputs.append("results/{dataset}/surrogates/forward_comparison.parquet")
    if config["estimator"] == "gradient":
        outputs += [
            "results/{dataset}/validation/summary.parquet",
            "results/{dataset}/validation/estimator_validation.png",
        ]
    return expand(outputs, dataset=DATASET)


# Cheap steps that only read and write small tables: on a cluster they run in the main
# Snakemake process instead of being submitted as jobs (no effect on local runs). The
# rules that exist only with some configs (random_grouping, plot_variants,
# diagnose_transfer) say so themselves (localrule: True).
localrules:
    sample_subsets,
    pair_design,
    gather_subset_values,
    higher_order_affinity,
    pairwise_affinity,
    fit_surrogates,
    cluster_tasks,
    gather_clustering,
    baseline_grouping,
    evaluate_groupings,
    plot_figures,
