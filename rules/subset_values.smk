rule gather_subset_values:
    input:
        chunks=subset_value_chunks,
        code=library_code("gather_subset_values.py"),
    output:
        "results/{dataset}/subset_values/{estimator}/{design}.parquet",
    log:
        "results/{dataset}/logs/gather_subset_values/{estimator}_{design}.log",
    # Reads and writes small tables: on a cluster it runs in the main Snakemake process.
    localrule: True
    conda:
        "../envs/taskgroup.yaml"
    resources:
        mem_mb=gathered_mem_mb,
    script:
        "../workflow_scripts/gather_subset_values.py"
