rule train_group_model:
    input:
        examples=EXAMPLES_TABLE,
        tasks=TASKS_TABLE,
        code=library_code("train_group_model.py"),
    output:
        **final_diagnostics_output(),
        results="results/{dataset}/final/{variant}/{key}.parquet",
        models=expand(
            "results/{{dataset}}/final/{{variant}}/{{key}}/model_seed{seed}.pt",
            seed=TRAINING_SEEDS,
        ),
    log:
        "results/{dataset}/logs/train_group_model/{variant}/{key}.log",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        mem_mb=training_mem_mb(),
        gpu=1,
    params:
        # The options the variant {variant} turns on, with their settings ({} = plain).
        options=final_variant_options,
        # The group's tasks; {key} is a hash of them, so a group's job and model are shared
        # by every grouping that has the group and do not rerun when other groups change.
        members=group_members,
        hidden_sizes=config["model"]["hidden_sizes"],
        training=training_params("final"),
        seeds=TRAINING_SEEDS,
        metric=config["evaluation"]["metric"],
        # The cut of the validation rows into early stopping's and the recommendation's.
        selection=selection_split_params(),
    script:
        "../workflow_scripts/train_group_model.py"
