rule gather_subset_values:
    input:
        chunks=subset_value_chunks,
        code=library_code("gather_subset_values.py"),
    output:
        "results/{dataset}/subset_values/{estimator}/{design}.parquet",
    log:
        "results/{dataset}/logs/gather_subset_values/{estimator}_{design}.log",
    conda:
        "../envs/taskgroup.yaml"
    script:
        "../workflow_scripts/gather_subset_values.py"
