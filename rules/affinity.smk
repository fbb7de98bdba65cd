rule higher_order_affinity:
    input:
        values=subset_values("random"),
        tasks="results/{dataset}/data/tasks.parquet",
        code=library_code("higher_order_affinity.py"),
    output:
        "results/{dataset}/affinity/higher_order.parquet",
    log:
        "results/{dataset}/logs/higher_order_affinity.log",
    conda:
        "../envs/taskgroup.yaml"
    script:
        "../workflow_scripts/higher_order_affinity.py"


rule pairwise_affinity:
    input:
        values=subset_values("pairs"),
        tasks="results/{dataset}/data/tasks.parquet",
        code=library_code("pairwise_affinity.py"),
    output:
        "results/{dataset}/affinity/pairwise.parquet",
    log:
        "results/{dataset}/logs/pairwise_affinity.log",
    conda:
        "../envs/taskgroup.yaml"
    script:
        "../workflow_scripts/pairwise_affinity.py"


rule lookahead_affinity:
    input:
        examples="results/{dataset}/data/examples.parquet",
        tasks="results/{dataset}/data/tasks.parquet",
        code=library_code("lookahead_affinity.py"),
    output:
        "results/{dataset}/affinity/lookahead.parquet",
    log:
        "results/{dataset}/logs/lookahead_affinity.log",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        gpu=1,
    params:
        hidden_sizes=config["model"]["hidden_sizes"],
        training=training_params("meta_init"),
        seed=config["meta_init"]["seed"],
        lookahead=sorted_params(config["affinity"]["lookahead"]),
    script:
        "../workflow_scripts/lookahead_affinity.py"


rule meta_init_affinity:
    input:
        examples="results/{dataset}/data/examples.parquet",
        tasks="results/{dataset}/data/tasks.parquet",
        model="results/{dataset}/meta_init/model.pt",
        code=library_code("meta_init_affinity.py"),
    output:
        "results/{dataset}/affinity/{source}.parquet",
    log:
        "results/{dataset}/logs/meta_init_affinity/{source}.log",
    wildcard_constraints:
        source="gradient_cosine|covariance",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    params:
        covariance_features=config["affinity"].get("covariance_features", "inputs"),
    script:
        "../workflow_scripts/meta_init_affinity.py"
