rule prepare_dataset:
    input:
        data=dataset_inputs(),
        code=library_code("prepare_dataset.py"),
    output:
        examples=EXAMPLES_TABLE,
        tasks=TASKS_TABLE,
    log:
        "results/{dataset}/logs/prepare_dataset.log",
    conda:
        "../envs/taskgroup.yaml"
    resources:
        mem_mb=data_mem_mb(),
    params:
        kind=config["dataset"]["kind"],
        settings=dataset_params(),
    script:
        "../workflow_scripts/prepare_dataset.py"
