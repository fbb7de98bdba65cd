rule train_cluster_model:
    input:
        examples="results/{dataset}/data/examples.parquet",
        tasks="results/{dataset}/data/tasks.parquet",
        grouping="results/{dataset}/groupings/{grouping}.parquet",
        code=library_code("train_cluster_model.py"),
    output:
        results="results/{dataset}/final/{grouping}/group_{group}.parquet",
        model="results/{dataset}/final/{grouping}/group_{group}.pt",
    log:
        "results/{dataset}/logs/train_cluster_model/{grouping}_{group}.log",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        gpu=1,
    params:
        hidden_sizes=config["model"]["hidden_sizes"],
        training=training_params("final"),
        seed=config["final"]["seed"],
        metric=config["evaluation"]["metric"],
    script:
        "../workflow_scripts/train_cluster_model.py"
