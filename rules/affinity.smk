rule higher_order_affinity:
    input:
        values=subset_values("random"),
        tasks=TASKS_TABLE,
        code=library_code("higher_order_affinity.py"),
    output:
        "results/{dataset}/affinity/higher_order.parquet",
    log:
        "results/{dataset}/logs/higher_order_affinity.log",
    # Reads and writes small tables: on a cluster it runs in the main Snakemake process.
    localrule: True
    conda:
        "../envs/taskgroup.yaml"
    resources:
        mem_mb=design_mem_mb("random"),
    script:
        "../workflow_scripts/higher_order_affinity.py"


rule pairwise_affinity:
    input:
        values=subset_values("pairs"),
        tasks=TASKS_TABLE,
        code=library_code("pairwise_affinity.py"),
    output:
        "results/{dataset}/affinity/pairwise.parquet",
    log:
        "results/{dataset}/logs/pairwise_affinity.log",
    # Reads and writes small tables: on a cluster it runs in the main Snakemake process.
    localrule: True
    conda:
        "../envs/taskgroup.yaml"
    resources:
        mem_mb=design_mem_mb("pairs"),
    params:
        # When the pairs are sampled, the unsampled ones are missing, not an error.
        **pair_sample_params(),
    script:
        "../workflow_scripts/pairwise_affinity.py"


rule lookahead_affinity:
    input:
        examples=EXAMPLES_TABLE,
        tasks=TASKS_TABLE,
        code=library_code("lookahead_affinity.py"),
    output:
        "results/{dataset}/affinity/lookahead.parquet",
    log:
        "results/{dataset}/logs/lookahead_affinity.log",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        mem_mb=training_mem_mb(),
        gpu=1,
    params:
        hidden_sizes=config["model"]["hidden_sizes"],
        training=training_params("meta_init"),
        seed=config["meta_init"]["seed"],
        lookahead=sorted_deep(config["affinity"]["lookahead"]),
    script:
        "../workflow_scripts/lookahead_affinity.py"


rule meta_init_affinity:
    input:
        examples=EXAMPLES_TABLE,
        tasks=TASKS_TABLE,
        model=META_INIT_MODEL,
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
    resources:
        mem_mb=training_mem_mb(),
    params:
        covariance_features=config["affinity"]["covariance_features"],
    script:
        "../workflow_scripts/meta_init_affinity.py"
