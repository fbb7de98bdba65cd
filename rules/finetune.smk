rule finetune_subsets:
    input:
        # with finetune.lr "auto": the rate chosen on the held-out subsets
        **lr_curve_inputs(),
        examples=EXAMPLES_TABLE,
        tasks=TASKS_TABLE,
        model=META_INIT_MODEL,
        subsets="results/{dataset}/subsets/{design}.parquet",
        code=library_code("finetune_subsets.py"),
    output:
        "results/{dataset}/subset_values/finetune/{design}/chunk_{chunk}.parquet",
    log:
        "results/{dataset}/logs/finetune_subsets/{design}_{chunk}.log",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        mem_mb=finetuning_mem_mb(config["subsets"]["chunk_size"]),
        gpu=1,
    params:
        chunk_size=config["subsets"]["chunk_size"],
        finetune=finetune_params(),
        metric=config["evaluation"]["metric"],
    script:
        "../workflow_scripts/finetune_subsets.py"
