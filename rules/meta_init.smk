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
        mem_mb=training_mem_mb(),
        gpu=1,
    params:
        # Enabled training_options.meta_init only (none: plain training, no extra outputs).
        **meta_init_options(),
        hidden_sizes=config["model"]["hidden_sizes"],
        training=training_params("meta_init"),
        keep_best_epoch=config["meta_init"]["keep_best_epoch"],
        seed=config["meta_init"]["seed"],
        metric=config["evaluation"]["metric"],
    script:
        "../workflow_scripts/train_meta_init.py"
