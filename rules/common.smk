# Shared by every rule file. Config validation, derived constants, shared paths and
# wildcard constraints; then the params/input functions, the shared ones first, then those
# of one rule file each (Snakemake's linter wants functions and rules in separate files).
# Which group models exist is discovered in rules/groups.smk.
import os
import re
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate

from taskgroup import resources as sizes
from taskgroup.config import (
    check_config,
    check_number_texts,
    configured_dataset,
    dataset_files,
    dataset_section,
    forward_selection_settings,
    missing_intermediate_lines,
    missing_intermediates,
    n_tasks,
    needs_pair_design,
    pair_design_size,
    pair_sample,
    run_summary,
    sorted_deep,
)
from taskgroup.data.designs import n_chunks
from taskgroup.imports import library_files
from taskgroup.models.options import enabled_options, variant_options

# Before the schema: its message for lr: 1e-3 (text to YAML) does not say why.
check_number_texts(
    config,
    # libyaml's loader when PyYAML has it: the pure-Python one is a noticeable part of every
    # Snakemake start
    yaml.load(
        Path(workflow.basedir, "config/config.schema.yaml").read_text(),
        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
    ),
)
validate(config, schema="../config/config.schema.yaml")
check_config(config)

DATASET = config["dataset"]["name"]
N_TASKS = n_tasks(config)
# What the config decided, on the console before any job (job logs are read later, if ever);
# then the results deleted by hand that a plain run would leave missing.
for line in run_summary(config, N_TASKS) + missing_intermediate_lines(
    missing_intermediates(".snakemake/metadata", f"results/{DATASET}")
):
    print(f"taskgroup: {line}", file=sys.stderr)
# The random design of subsets.* feeds the higher-order affinity and the surrogates; the
# singletons-and-pairs design is valued too when a pairwise affinity or the surrogates'
# negative-transfer ground truth needs it: every pair up to subsets.pairs.sample_above_tasks
# tasks, a sample of pairs above (PAIR_SAMPLE: {per_task, seed}, else None), so that its
# subset count grows as k, not k^2.
PAIR_SAMPLE = pair_sample(config, N_TASKS)
DESIGN_SIZES = {"random": config["subsets"]["count"]}
if needs_pair_design(config):
    DESIGN_SIZES["pairs"] = pair_design_size(N_TASKS, PAIR_SAMPLE)
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
# The recommendation compares every candidate with naive MTL, so it needs that baseline.
RECOMMEND = "naive_mtl" in BASELINES
# Trainings of every group model (training_options.final.variants); the first is the one
# the figures show.
FINAL_OPTIONS = config["training_options"]["final"]
VARIANTS = FINAL_OPTIONS["variants"]
COMPARE_VARIANTS = "plain" in VARIANTS and len(VARIANTS) > 1
FINAL_DIAGNOSTICS = FINAL_OPTIONS["diagnostics"]["enabled"]
TRAINING_SEEDS = [
    config["final"]["seed"] + offset
    for offset in range(config["evaluation"]["n_seeds"])
]

# Paths that many rules read.
EXAMPLES_TABLE = "results/{dataset}/data/examples.parquet"
TASKS_TABLE = "results/{dataset}/data/tasks.parquet"
META_INIT_MODEL = "results/{dataset}/meta_init/model.pt"
L2_CURVE_TABLE = "results/{dataset}/validation/l2_curve.parquet"
TASK_SCALES_TABLE = "results/{dataset}/validation/task_scales.parquet"
LR_CURVE_TABLE = "results/{dataset}/validation/lr_curve.parquet"
# The gradient_estimate keys that every estimate uses (l2_candidates only chooses l2).
ESTIMATE_KEYS = (
    "l2",
    "newton_steps",
    "flow_steps",
    "max_relative_shift",
    "task_scales",
    "curvature_tolerance",
    "step_scale",
)


wildcard_constraints:
    # The name is text, not a pattern: a "." in it must match only a ".".
    dataset=re.escape(DATASET),
    chunk=r"\d+",
    design="random|pairs",
    estimator="finetune|gradient",
    source="|".join(SOURCES),
    method="|".join(METHODS),
    grouping="|".join(GROUPINGS),
    variant="|".join(VARIANTS),
    key=r"[0-9a-f]{16}",
    batch=r"\d+",


# --- Memory of the jobs (resources: mem_mb=...), from the sizes known at parse time ---
# The formulas and their units are in taskgroup/resources.py; these functions give them the
# config's sizes. mem_mb does not rerun jobs; the SLURM profile leaves it to the rules.


def data_sizes():
    """(bytes of the examples in memory, examples with projected gradients (train + val),
    validation examples, input features): exact for the planted generator; for the graph
    generator every task labels every node; for a user's files the bytes are an upper
    estimate from their size on disk, and the rows those bytes hold at 20 features (the
    feature count is unknown before the data are read)."""
    dataset = config["dataset"]
    if dataset["kind"] == "planted":
        planted = dataset["planted"]
        rows = sizes.planted_examples(
            N_TASKS, planted["n_train"], planted["n_val"], planted["n_test"]
        )
        data = sizes.examples_bytes(rows, planted["n_features"])
        labelled = N_TASKS * (planted["n_train"] + planted["n_val"])
        return data, labelled, N_TASKS * planted["n_val"], planted["n_features"]
    files = dataset_files(dataset)
    data = sizes.file_examples_bytes(sum(os.path.getsize(path) for path in files))
    if not files:  # the graph generator: every task labels every node
        _, graph = configured_dataset(dataset)
        features = graph.n_features * (graph.hops + 1)
        data = sizes.examples_bytes(N_TASKS * graph.n_nodes, features)
    # rows of a float64 table of 20 features: the bound the projected-table formulas need
    rows = data // sizes.examples_bytes(1, 20)
    return data, rows, rows, 20


DATA_BYTES, N_LABELLED, N_VAL_EXAMPLES, N_FEATURES = data_sizes()
SHAPES = sizes.layer_shapes(N_FEATURES, config["model"]["hidden_sizes"], N_TASKS)
# the widest layer's units: a stacked model's validation activations per example
WIDEST = max([N_FEATURES, *config["model"]["hidden_sizes"]])
PROJECTED_DIM = sizes.projected_dim(SHAPES, config["projection"]["dim"])
SHARED_COLUMNS, HEAD_COLUMNS = sizes.estimate_columns(
    SHAPES, config["projection"]["dim"]
)


def training_mem_mb():
    """mem_mb of a job that trains the network on the examples."""
    return sizes.training_mb(DATA_BYTES, sizes.n_parameters(SHAPES))


def finetuning_mem_mb(n_models):
    """mem_mb of a job that fine-tunes ``n_models`` subsets together."""
    return sizes.finetuning_mb(
        DATA_BYTES, sizes.n_parameters(SHAPES), n_models, N_VAL_EXAMPLES, WIDEST
    )


def projection_mem_mb():
    """mem_mb of project_gradients."""
    widest = max(out * inputs for out, inputs in SHAPES)
    return sizes.projection_mb(DATA_BYTES, N_LABELLED, PROJECTED_DIM, widest)


def gradient_estimate_mem_mb(chunk, largest):
    """mem_mb of a job that values ``chunk`` subsets of at most ``largest`` tasks at a time
    with the gradient estimator."""
    return sizes.subset_estimate_mb(
        N_TASKS,
        N_LABELLED,
        N_VAL_EXAMPLES,
        PROJECTED_DIM,
        SHARED_COLUMNS,
        HEAD_COLUMNS,
        largest,
        chunk,
    )


def forward_mem_mb():
    """mem_mb of forward_selection: fine-tuning (finetune), or batches of up to k
    candidate subsets (gradient)."""
    if config["estimator"] == "finetune":
        # the oracle fine-tunes batches of up to k candidate subsets
        return finetuning_mem_mb(N_TASKS)
    return gradient_estimate_mem_mb(
        N_TASKS, config["subsets"]["forward_selection"]["max_size"]
    )


def sdp_mem_mb():
    """mem_mb of cluster_tasks (the SDP's solver dominates)."""
    return sizes.sdp_mb(N_TASKS)


def validation_mem_mb():
    """mem_mb of validate_estimator (fine-tuning the held-out subsets and clustering)."""
    return sizes.validation_mb(
        DATA_BYTES,
        sizes.n_parameters(SHAPES),
        N_TASKS,
        config["validation"]["n_subsets"],
        N_VAL_EXAMPLES,
        WIDEST,
    )


def data_mem_mb():
    """mem_mb of prepare_dataset, which builds the examples table."""
    return sizes.data_table_mb(DATA_BYTES)


def design_mem_mb(*designs):
    """mem_mb of a table stage over the per-subset values of ``designs``."""
    return sizes.subset_table_mb(sum(DESIGN_SIZES.get(d, 0) for d in designs), N_TASKS)


def surrogates_mem_mb():
    """mem_mb of fit_surrogates (the random and the pair design)."""
    return sizes.surrogates_mb(
        DESIGN_SIZES["random"] + DESIGN_SIZES.get("pairs", 0), N_TASKS
    )


def gathered_mem_mb(wildcards):
    """mem_mb of gather_subset_values for the design {design}."""
    return design_mem_mb(wildcards.design)


# --- Functions that several rule files use ---


def library_code(script):
    """The library source files that ``workflow_scripts/<script>`` imports, directly or
    through other library modules (taskgroup.imports.library_files, read at parse time).

    Each job lists them as its ``code`` input, because Snakemake's code trigger only
    watches the script file itself, so an edit to the library would otherwise leave
    stale results. As inputs, the files rerun a job when their content changes (checksum;
    a newer mtime with the same bytes reruns nothing), and they enter the provenance hash
    of the between-workflow cache."""
    repository = Path(workflow.basedir)
    files = library_files(repository / "workflow_scripts" / script, repository)
    return [os.path.relpath(path) for path in files]


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
        "weight_decay": settings["weight_decay"],
    }


def clustering_params():
    """The fields of ClusteringSettings (the config section without the methods, which
    each rule names itself), shared by cluster_tasks and validate_estimator; the schema
    fills in the defaults."""
    return {
        key: config["clustering"][key]
        for key in ("similarity", "rounding", "n_clusters", "max_clusters", "seed")
    }


def auto_folds():
    """clustering.auto_folds when n_clusters is "auto" (the held-out count), else None: it
    changes no configured-count result, so it must not rerun those jobs."""
    section = config["clustering"]
    return section["auto_folds"] if section["n_clusters"] == "auto" else None


def auto_count_values(wildcards):
    """cluster_tasks' subset values: the random design's, for the held-out count of
    n_clusters "auto" on the higher-order affinity; none otherwise."""
    if (
        config["clustering"]["n_clusters"] == "auto"
        and wildcards.source == "higher_order"
    ):
        return subset_values("random").format(dataset=wildcards.dataset)
    return []


def surrogate_params():
    """The fields of SurrogateSettings: the config section without "enabled" (the schema
    fills in the defaults), keys sorted."""
    return sorted_deep(
        {key: value for key, value in config["surrogates"].items() if key != "enabled"}
    )


def pair_sample_params():
    """The pair design's sample settings as params: {"pair_sample": {per_task, seed}} when
    the pairs are sampled (PAIR_SAMPLE), nothing when every pair is valued, so that the
    jobs of a full pair design keep their params (and do not rerun)."""
    return {"pair_sample": PAIR_SAMPLE} if PAIR_SAMPLE is not None else {}


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
    return {"examples": EXAMPLES_TABLE}


def estimator_params():
    """The configured estimator's settings, for params: (only the active one's, so that
    the other's keys do not rerun the job): gradient_estimate (gradient), or finetune (its
    training settings and seed)."""
    if config["estimator"] == "gradient":
        return {"estimate": gradient_estimate_params()}
    return {"finetune": finetune_params()}


def finetune_params():
    """The settings of a job that fine-tunes subsets: the finetune section without
    lr_candidates: with lr "auto" the chosen rate arrives in the lr curve table
    (lr_curve_inputs), and with a number they change no fine-tuning."""
    return sorted_deep(
        {
            key: value
            for key, value in config["finetune"].items()
            if key != "lr_candidates"
        }
    )


def lr_curve_inputs(fine_tunes=True):
    """The lr curve table, as an input of the jobs that fine-tune subsets (``fine_tunes``)
    when finetune.lr is "auto"; none with a number."""
    if fine_tunes and config["finetune"]["lr"] == "auto":
        return {"lr_curve": LR_CURVE_TABLE}
    return {}


def gradient_estimate_params():
    """The settings of a job that estimates subsets: l2 ("auto" or a number),
    newton_steps, flow_steps, max_relative_shift, task_scales. Not l2_candidates: with l2
    "auto" the chosen l2 arrives in the l2 curve table (calibration_inputs), and with a
    number they change no estimate."""
    return sorted_deep({key: config["gradient_estimate"][key] for key in ESTIMATE_KEYS})


def calibration_inputs():
    """What the jobs that estimate subsets read from the held-out subsets: the l2 curve
    table when gradient_estimate.l2 is "auto", the task scales table when task_scales is
    "auto"; none of them otherwise, so that the held-out fine-tunings do not hold the
    estimates up."""
    if config["estimator"] != "gradient":
        return {}
    inputs = {}
    if config["gradient_estimate"]["l2"] == "auto":
        inputs["l2_curve"] = L2_CURVE_TABLE
    if config["gradient_estimate"]["task_scales"] == "auto":
        inputs["task_scales"] = TASK_SCALES_TABLE
    return inputs


def task_scales_output():
    """calibrate_estimate's task scales table, when gradient_estimate.task_scales is
    "auto"."""
    if config["gradient_estimate"]["task_scales"] == "auto":
        return {"task_scales": TASK_SCALES_TABLE}
    return {}


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
    if RECOMMEND:
        outputs += [
            "results/{dataset}/recommendation/groups.parquet",
            "results/{dataset}/recommendation/verdict.parquet",
            "results/{dataset}/recommendation/verdict.md",
        ]
    if config["estimator"] == "gradient":
        outputs += [
            "results/{dataset}/validation/summary.parquet",
            "results/{dataset}/validation/estimator_validation.png",
        ]
    return expand(outputs, dataset=DATASET)


# --- Input, output and params functions of rules/meta_init.smk (its only user) ---


def meta_init_options():
    """The enabled options of training_options.meta_init, with their defaults filled in,
    as params: {"options": {...}}; nothing when every option is off, so that the default
    (plain) training job keeps its params and outputs."""
    options = enabled_options(config["training_options"]["meta_init"])
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


# --- Input, output and params functions of rules/train.smk (its only user) ---


def final_variant_options(wildcards):
    """The enabled options of the final-training variant {variant} (settings from
    training_options.final; see taskgroup.models.options.variant_options)."""
    return variant_options(FINAL_OPTIONS, wildcards.variant)


def final_diagnostics_output():
    """The diagnostics output of a group model job, when training_options.final.diagnostics
    is on."""
    if FINAL_DIAGNOSTICS:
        return {
            "diagnostics": "results/{dataset}/final/{variant}/batch_{batch}_diagnostics.parquet"
        }
    return {}


def batch_groups(wildcards):
    """group key -> members of the groups that batch {batch} trains (see groups.smk)."""
    return group_batches(wildcards.dataset)[int(wildcards.batch)]


def group_models_mem_mb(wildcards):
    """mem_mb of train_group_models: a training job plus the stacked models of its batch
    (every group and seed) up to the stacking budget."""
    n_models = len(batch_groups(wildcards)) * len(TRAINING_SEEDS)
    return sizes.stacked_training_mb(
        DATA_BYTES,
        sizes.n_parameters(SHAPES),
        n_models,
        N_VAL_EXAMPLES,
        WIDEST,
    )


def selection_split_params():
    """The fields of taskgroup.models.holdout.SelectionSplit: how each task's validation
    rows are cut into the stopping part and the recommendation's selection part."""
    return {
        "fraction": config["recommendation"]["selection_fraction"],
        "seed": config["recommendation"]["seed"],
    }


# --- Input, output and params functions of rules/subset_values.smk (its only user) ---


def subset_value_chunks(wildcards):
    """Every chunk of the per-subset stage for one design."""
    return expand(
        "results/{dataset}/subset_values/{estimator}/{design}/chunk_{chunk}.parquet",
        dataset=wildcards.dataset,
        estimator=wildcards.estimator,
        design=wildcards.design,
        chunk=CHUNKS[wildcards.design],
    )


# --- Input, output and params functions of rules/surrogates.smk (its only user) ---


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


# --- Input, output and params functions of rules/evaluate.smk (its only user) ---


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


# --- Params functions of rules/recommend.smk (its only user) ---


def recommendation_candidates():
    """The groupings the recommendation chooses among: every clustered grouping, naive MTL
    and (when trained) STL; the planted and random groupings are yardsticks only."""
    return CLUSTERED + [name for name in ("naive_mtl", "stl") if name in BASELINES]


def recommendation_params():
    """The fields of taskgroup.report.recommendation.RecommendationSettings (the
    recommendation section without selection_fraction, which acts in the final trainings).
    """
    section = config["recommendation"]
    return {
        key: section[key]
        for key in (
            "statistic",
            "margin",
            "task_alpha",
            "reliability_alpha",
            "bootstrap_draws",
            "seed",
        )
    }


def validation_per_subset():
    """The estimator validation's per-subset table, read by the recommendation's noise
    floor; none when the validation does not run (estimator finetune)."""
    if config["estimator"] == "gradient":
        return "results/{dataset}/validation/per_subset.parquet"
    return []
