checkpoint cluster_tasks:
    input:
        affinity="results/{dataset}/affinity/affinity.parquet",
        tasks="results/{dataset}/data/tasks.parquet",
        code=library_code("cluster_tasks.py"),
    output:
        grouping="results/{dataset}/groupings/clustered.parquet",
        objective="results/{dataset}/clustering/objective.parquet",
    log:
        "results/{dataset}/logs/cluster_tasks.log",
    conda:
        "../envs/taskgroup.yaml"
    params:
        method=config["clustering"]["method"],
        similarity=config["clustering"]["similarity"],
        n_clusters=config["clustering"]["n_clusters"],
        seed=config["clustering"]["seed"],
    script:
        "../workflow_scripts/cluster_tasks.py"


checkpoint baseline_grouping:
    input:
        tasks="results/{dataset}/data/tasks.parquet",
        code=library_code("baseline_grouping.py"),
    output:
        "results/{dataset}/groupings/{grouping}.parquet",
    log:
        "results/{dataset}/logs/baseline_grouping/{grouping}.log",
    wildcard_constraints:
        grouping="naive_mtl|stl|planted",
    conda:
        "../envs/taskgroup.yaml"
    script:
        "../workflow_scripts/baseline_grouping.py"
