def subset_value_chunks(wildcards):
    """Every chunk of the per-subset stage for one design."""
    return expand(
        "results/{dataset}/subset_values/{estimator}/{design}/chunk_{chunk}.parquet",
        dataset=wildcards.dataset,
        estimator=wildcards.estimator,
        design=wildcards.design,
        chunk=CHUNKS[wildcards.design],
    )


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
    script:
        "../workflow_scripts/gather_subset_values.py"
