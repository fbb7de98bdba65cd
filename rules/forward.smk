rule forward_selection:
    input:
        # The projected gradients (estimator gradient) or the examples (finetune).
        **estimator_inputs(),
        # with gradient_estimate.l2 or task_scales "auto" (estimator gradient): the chosen ones
        **calibration_inputs(),
        # with finetune.lr "auto" (estimator finetune): the chosen rate
        **lr_curve_inputs(config["estimator"] == "finetune"),
        tasks=TASKS_TABLE,
        model=META_INIT_MODEL,
        code=library_code("forward_selection.py"),
    output:
        values=subset_values("forward"),
        selection="results/{dataset}/surrogates/forward_selection.parquet",
    log:
        "results/{dataset}/logs/forward_selection.log",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        mem_mb=forward_mem_mb(),
        # Fine-tunes every evaluated subset with estimator finetune; gradient only solves.
        gpu=1 if config["estimator"] == "finetune" else 0,
    params:
        # The active estimator's settings only: gradient_estimate, or finetune and its seed.
        **estimator_params(),
        estimator=config["estimator"],
        # When the selection stops; not whether it is enabled.
        selection={
            key: config["subsets"]["forward_selection"][key]
            for key in ("max_size", "min_improvement")
        },
        metric=config["evaluation"]["metric"],
    script:
        "../workflow_scripts/forward_selection.py"
