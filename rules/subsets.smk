rule sample_subsets:
    input:
        tasks="results/{dataset}/data/tasks.parquet",
        code=library_code("sample_subsets.py"),
    output:
        subsets="results/{dataset}/subsets/subsets.parquet",
        pair_counts="results/{dataset}/subsets/pair_counts.parquet",
    log:
        "results/{dataset}/logs/sample_subsets.log",
    conda:
        "../envs/taskgroup.yaml"
    params:
        size=config["subsets"]["size"],
        n_subsets=config["subsets"]["count"],
        seed=config["subsets"]["seed"],
    script:
        "../workflow_scripts/sample_subsets.py"
