from taskgroup.models.options import enabled_options


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


rule train_meta_init:
    input:
        examples=EXAMPLES_TABLE,
        tasks=TASKS_TABLE,
        code=library_code("train_meta_init.py"),
    output:
        **meta_init_option_outputs(),
        model=META_INIT_MODEL,
        metrics="results/{dataset}/meta_init/val_metrics.parquet",
    log:
        "results/{dataset}/logs/train_meta_init.log",
    # Reused across working directories under `--cache` with $SNAKEMAKE_OUTPUT_CACHE set
    # (keyed by the provenance of its inputs, its params, script and library code).
    cache: "omit-software"
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        gpu=1,
    params:
        # Enabled training_options.meta_init only (none: plain training, no extra outputs).
        **meta_init_options(),
        hidden_sizes=config["model"]["hidden_sizes"],
        training=training_params("meta_init"),
        seed=config["meta_init"]["seed"],
        metric=config["evaluation"]["metric"],
    script:
        "../workflow_scripts/train_meta_init.py"
