rule sample_subsets:
    input:
        tasks=TASKS_TABLE,
        code=library_code("sample_subsets.py"),
    output:
        subsets="results/{dataset}/subsets/random.parquet",
        pair_counts="results/{dataset}/subsets/pair_counts.parquet",
    log:
        "results/{dataset}/logs/sample_subsets.log",
    # Reads and writes small tables: on a cluster it runs in the main Snakemake process.
    localrule: True
    conda:
        "../envs/taskgroup.yaml"
    params:
        size=config["subsets"]["size"],
        n_subsets=config["subsets"]["count"],
        seed=config["subsets"]["seed"],
    script:
        "../workflow_scripts/sample_subsets.py"


rule pair_design:
    input:
        tasks=TASKS_TABLE,
        code=library_code("pair_design.py"),
    output:
        "results/{dataset}/subsets/pairs.parquet",
    log:
        "results/{dataset}/logs/pair_design.log",
    # Reads and writes small tables: on a cluster it runs in the main Snakemake process.
    localrule: True
    conda:
        "../envs/taskgroup.yaml"
    params:
        # Above subsets.pairs.sample_above_tasks tasks: the sample's settings (else none).
        **pair_sample_params(),
    script:
        "../workflow_scripts/pair_design.py"
