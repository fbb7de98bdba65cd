rule calibrate_finetune:
    input:
        examples=EXAMPLES_TABLE,
        tasks=TASKS_TABLE,
        model=META_INIT_MODEL,
        subsets="results/{dataset}/subsets/random.parquet",
        code=library_code("calibrate_finetune.py"),
    output:
        LR_CURVE_TABLE,
    log:
        "results/{dataset}/logs/calibrate_finetune.log",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        mem_mb=validation_mem_mb(),
        gpu=1,
    params:
        # the held-out subsets: not validation.scales, which only validate_estimator uses
        held_out={key: config["validation"][key] for key in ("n_subsets", "seed")},
        finetune=sorted_deep(config["finetune"]),
        metric=config["evaluation"]["metric"],
    script:
        "../workflow_scripts/calibrate_finetune.py"


rule calibrate_estimate:
    input:
        # with finetune.lr "auto": the rate chosen on the held-out subsets
        **lr_curve_inputs(),
        examples=EXAMPLES_TABLE,
        tasks=TASKS_TABLE,
        model=META_INIT_MODEL,
        subsets="results/{dataset}/subsets/random.parquet",
        projected="results/{dataset}/gradients/projected.parquet",
        projection="results/{dataset}/gradients/projection.parquet",
        code=library_code("calibrate_estimate.py"),
    output:
        **task_scales_output(),
        other_seed="results/{dataset}/validation/other_seed.parquet",
        l2_curve=L2_CURVE_TABLE,
    log:
        "results/{dataset}/logs/calibrate_estimate.log",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        mem_mb=max(
            validation_mem_mb(),
            gradient_estimate_mem_mb(
                config["validation"]["n_subsets"], config["subsets"]["size"]
            ),
        ),
        gpu=1,
    params:
        # the held-out subsets: not validation.scales, which only validate_estimator uses
        held_out={key: config["validation"][key] for key in ("n_subsets", "seed")},
        finetune=finetune_params(),
        estimate=sorted_deep(config["gradient_estimate"]),
        metric=config["evaluation"]["metric"],
    script:
        "../workflow_scripts/calibrate_estimate.py"


rule validate_estimator:
    input:
        # with finetune.lr "auto": the rate chosen on the held-out subsets
        **lr_curve_inputs(),
        examples=EXAMPLES_TABLE,
        tasks=TASKS_TABLE,
        model=META_INIT_MODEL,
        subsets="results/{dataset}/subsets/random.parquet",
        estimate="results/{dataset}/subset_values/gradient/random.parquet",
        other_seed="results/{dataset}/validation/other_seed.parquet",
        l2_curve=L2_CURVE_TABLE,
        code=library_code("validate_estimator.py"),
    output:
        per_subset="results/{dataset}/validation/per_subset.parquet",
        summary="results/{dataset}/validation/summary.parquet",
        validity="results/{dataset}/validation/validity_curve.parquet",
        figure=report(
            "results/{dataset}/validation/estimator_validation.png",
            caption="../report/validation.rst",
            category="Estimator",
        ),
    log:
        "results/{dataset}/logs/validate_estimator.log",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        mem_mb=validation_mem_mb(),
        gpu=1,
    params:
        validation=sorted_deep(config["validation"]),
        finetune=finetune_params(),
        # the estimated and real affinities are clustered with the primary method ("auto"
        # is resolved on the real one)
        clustering=clustering_params(),
        clustering_method=METHODS[0],
        metric=config["evaluation"]["metric"],
    script:
        "../workflow_scripts/validate_estimator.py"
