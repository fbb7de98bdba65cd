rule train_group_models:
    input:
        examples=EXAMPLES_TABLE,
        tasks=TASKS_TABLE,
        code=library_code("train_group_models.py"),
    output:
        **final_diagnostics_output(),
        results="results/{dataset}/final/{variant}/batch_{batch}.parquet",
    log:
        "results/{dataset}/logs/train_group_models/{variant}/batch_{batch}.log",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        mem_mb=group_models_mem_mb,
        gpu=1,
    params:
        # The options the variant {variant} turns on, with their settings ({} = plain).
        options=final_variant_options,
        # The batch's groups: group key (a hash of the members) -> members. A group goes to
        # the batch its key picks, so new groups change only their batches; the job then
        # trains only groups with no model from the same inputs in models_dir.
        groups=batch_groups,
        models_dir="results/{dataset}/final/{variant}",
        hidden_sizes=config["model"]["hidden_sizes"],
        training=training_params("final"),
        seeds=TRAINING_SEEDS,
        metric=config["evaluation"]["metric"],
        # The cut of the validation rows into early stopping's and the recommendation's.
        selection=selection_split_params(),
        budget=config["evaluation"]["training_budget"],
        patience=config["evaluation"]["patience"],
    script:
        "../workflow_scripts/train_group_models.py"
