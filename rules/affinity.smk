rule compute_affinity:
    input:
        values=expand(
            "results/{{dataset}}/subset_values/{estimator}.parquet",
            estimator=config["estimator"],
        ),
        tasks="results/{dataset}/data/tasks.parquet",
        code=library_code("compute_affinity.py"),
    output:
        "results/{dataset}/affinity/affinity.parquet",
    log:
        "results/{dataset}/logs/compute_affinity.log",
    conda:
        "../envs/taskgroup.yaml"
    script:
        "../workflow_scripts/compute_affinity.py"
