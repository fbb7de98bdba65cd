checkpoint cluster_tasks:
    input:
        affinity="results/{dataset}/affinity/{source}.parquet",
        tasks=TASKS_TABLE,
        # n_clusters auto on the higher-order affinity: its subsets, cut into folds
        values=auto_count_values,
        code=library_code("cluster_tasks.py"),
    output:
        # one grouping per clustering method of this affinity source
        groupings=expand(
            "results/{{dataset}}/groupings/{{source}}-{method}.parquet", method=METHODS
        ),
        objective="results/{dataset}/clustering/{source}.parquet",
        scan="results/{dataset}/clustering/{source}-scan.parquet",
    log:
        "results/{dataset}/logs/cluster_tasks/{source}.log",
    # Reads and writes small tables: on a cluster it runs in the main Snakemake process.
    localrule: True
    conda:
        "../envs/taskgroup.yaml"
    resources:
        mem_mb=sdp_mem_mb(),
    params:
        clustering=clustering_params(),
        methods=METHODS,
        auto_folds=auto_folds(),
    script:
        "../workflow_scripts/cluster_tasks.py"


rule gather_clustering:
    input:
        objectives=expand(
            "results/{{dataset}}/clustering/{source}.parquet", source=SOURCES
        ),
        code=library_code("gather_clustering.py"),
    output:
        table="results/{dataset}/clustering/objective.parquet",
        figure=report(
            "results/{dataset}/clustering/objective.png",
            caption="../report/objective.rst",
            category="Clustering",
        ),
    log:
        "results/{dataset}/logs/gather_clustering.log",
    # Reads and writes small tables: on a cluster it runs in the main Snakemake process.
    localrule: True
    conda:
        "../envs/taskgroup.yaml"
    script:
        "../workflow_scripts/gather_clustering.py"


checkpoint baseline_grouping:
    input:
        tasks=TASKS_TABLE,
        code=library_code("baseline_grouping.py"),
    output:
        "results/{dataset}/groupings/{grouping}.parquet",
    log:
        "results/{dataset}/logs/baseline_grouping/{grouping}.log",
    wildcard_constraints:
        grouping="naive_mtl|stl|planted",
    # Reads and writes small tables: on a cluster it runs in the main Snakemake process.
    localrule: True
    conda:
        "../envs/taskgroup.yaml"
    script:
        "../workflow_scripts/baseline_grouping.py"


# Random partitions are a baseline only when evaluation.baselines lists "random".
if RANDOM:

    checkpoint random_grouping:
        input:
            reference=f"results/{{dataset}}/groupings/{PRIMARY}.parquet",
            code=library_code("random_grouping.py"),
        output:
            expand("results/{{dataset}}/groupings/{grouping}.parquet", grouping=RANDOM),
        log:
            "results/{dataset}/logs/random_grouping.log",
        localrule: True
        conda:
            "../envs/taskgroup.yaml"
        script:
            "../workflow_scripts/random_grouping.py"
