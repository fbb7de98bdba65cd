from taskgroup.estimate.settings import ProjectionSettings


rule project_gradients:
    input:
        examples=EXAMPLES_TABLE,
        tasks=TASKS_TABLE,
        model=META_INIT_MODEL,
        code=library_code("project_gradients.py"),
    output:
        projected="results/{dataset}/gradients/projected.parquet",
        projection="results/{dataset}/gradients/projection.parquet",
    log:
        "results/{dataset}/logs/project_gradients.log",
    # Reused across working directories under `--cache` with $SNAKEMAKE_OUTPUT_CACHE set,
    # like the meta-initialization it is computed from.
    cache: "omit-software"
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        mem_mb=projection_mem_mb(),
        gpu=1,
    params:
        # Only the settings the structure uses (nonzeros for sparse only), keys sorted, so
        # that editing an unused key reruns nothing. The examples projected at a time are
        # derived from mem_mb: memory only, no params entry.
        projection=ProjectionSettings.from_mapping(config["projection"]).description(),
    script:
        "../workflow_scripts/project_gradients.py"


rule estimate_subsets:
    input:
        # with gradient_estimate.l2 or task_scales "auto": chosen on the held-out subsets
        **calibration_inputs(),
        projected="results/{dataset}/gradients/projected.parquet",
        projection="results/{dataset}/gradients/projection.parquet",
        model=META_INIT_MODEL,
        subsets="results/{dataset}/subsets/{design}.parquet",
        tasks=TASKS_TABLE,
        code=library_code("estimate_subsets.py"),
    output:
        "results/{dataset}/subset_values/gradient/{design}/chunk_{chunk}.parquet",
    log:
        "results/{dataset}/logs/estimate_subsets/{design}_{chunk}.log",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        # the random design's subsets, or the pair design's (2 tasks)
        mem_mb=gradient_estimate_mem_mb(
            config["subsets"]["chunk_size"], max(config["subsets"]["size"], 2)
        ),
    params:
        chunk_size=config["subsets"]["chunk_size"],
        estimate=gradient_estimate_params(),
        metric=config["evaluation"]["metric"],
    script:
        "../workflow_scripts/estimate_subsets.py"
