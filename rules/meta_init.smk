rule train_meta_init:
    input:
        examples="results/{dataset}/data/examples.parquet",
        tasks="results/{dataset}/data/tasks.parquet",
    output:
        model="results/{dataset}/meta_init/model.pt",
        metrics="results/{dataset}/meta_init/val_metrics.parquet",
    log:
        "results/{dataset}/logs/train_meta_init.log",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        gpu=1,
    params:
        hidden_sizes=config["model"]["hidden_sizes"],
        training=training_params("meta_init"),
        seed=config["meta_init"]["seed"],
    script:
        "../workflow_scripts/train_meta_init.py"
