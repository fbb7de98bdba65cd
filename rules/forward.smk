def estimator_inputs():
    """The inputs of a job that values subsets itself with the configured estimator: the
    projected gradients (gradient) or the examples (finetune), besides the tasks table and
    the meta-initialization that both need."""
    if config["estimator"] == "gradient":
        return {
            "projected": "results/{dataset}/gradients/projected.parquet",
            "projection": "results/{dataset}/gradients/projection.parquet",
        }
    return {"examples": "results/{dataset}/data/examples.parquet"}


def estimator_params():
    """The configured estimator's settings, for params: (only the active one's, so that
    the other's keys do not rerun the job): gradient_estimate (gradient), or finetune (its
    training settings and seed)."""
    if config["estimator"] == "gradient":
        return {"estimate": sorted_params(config["gradient_estimate"])}
    return {"finetune": sorted_params(config["finetune"])}


def forward_params():
    """When forward selection stops (max_size, min_improvement); not whether it is enabled."""
    section = config["subsets"]["forward_selection"]
    return {"max_size": section["max_size"], "min_improvement": section["min_improvement"]}


rule forward_selection:
    input:
        # The projected gradients (estimator gradient) or the examples (finetune).
        **estimator_inputs(),
        tasks="results/{dataset}/data/tasks.parquet",
        model="results/{dataset}/meta_init/model.pt",
        code=library_code("forward_selection.py"),
    output:
        values=subset_values("forward"),
        selection="results/{dataset}/surrogates/forward_selection.parquet",
    log:
        "results/{dataset}/logs/forward_selection.log",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        # Fine-tunes every evaluated subset with estimator finetune; gradient only solves.
        gpu=1 if config["estimator"] == "finetune" else 0,
    params:
        # The active estimator's settings only: gradient_estimate, or finetune and its seed.
        **estimator_params(),
        estimator=config["estimator"],
        selection=forward_params(),
        metric=config["evaluation"]["metric"],
    script:
        "../workflow_scripts/forward_selection.py"
