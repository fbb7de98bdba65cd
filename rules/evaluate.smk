rule evaluate_groupings:
    input:
        unpack(grouping_files),
        results=group_result_files,
        tasks="results/{dataset}/data/tasks.parquet",
        code=library_code("evaluate_groupings.py"),
    output:
        per_task="results/{dataset}/evaluation/per_task.parquet",
        summary="results/{dataset}/evaluation/summary.parquet",
    log:
        "results/{dataset}/logs/evaluate_groupings.log",
    conda:
        "../envs/taskgroup.yaml"
    params:
        groupings=GROUPINGS,
    script:
        "../workflow_scripts/evaluate_groupings.py"


rule plot_figures:
    input:
        affinity="results/{dataset}/affinity/affinity.parquet",
        clusters="results/{dataset}/groupings/clustered.parquet",
        per_task="results/{dataset}/evaluation/per_task.parquet",
        tasks="results/{dataset}/data/tasks.parquet",
        code=library_code("plot_figures.py"),
    output:
        heatmap="results/{dataset}/evaluation/affinity_heatmap.png",
        per_task="results/{dataset}/evaluation/per_task_metric.png",
    log:
        "results/{dataset}/logs/plot_figures.log",
    conda:
        "../envs/taskgroup.yaml"
    script:
        "../workflow_scripts/plot_figures.py"
