from taskgroup.estimate.settings import ProjectionSettings


def projection_params():
    """The projection settings its structure uses (structure, kind, seed, and factor_dim for
    kronecker or dim for dense), keys sorted: editing the other structure's size must not
    rerun project_gradients."""
    return ProjectionSettings.from_mapping(config["projection"]).description()


rule project_gradients:
    input:
        examples="results/{dataset}/data/examples.parquet",
        tasks="results/{dataset}/data/tasks.parquet",
        model="results/{dataset}/meta_init/model.pt",
        code=library_code("project_gradients.py"),
    output:
        projected="results/{dataset}/gradients/projected.parquet",
        projection="results/{dataset}/gradients/projection.parquet",
    log:
        "results/{dataset}/logs/project_gradients.log",
    # Reused across working directories under `--cache` with $SNAKEMAKE_OUTPUT_CACHE set,
    # like the meta-initialization it is computed from.
    cache: "omit-software"
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        gpu=1,
    params:
        projection=projection_params(),
        # Examples projected at a time: memory only, the result does not depend on it.
        batch_size=config["projection"]["batch_size"],
    script:
        "../workflow_scripts/project_gradients.py"


rule estimate_subsets:
    input:
        projected="results/{dataset}/gradients/projected.parquet",
        projection="results/{dataset}/gradients/projection.parquet",
        model="results/{dataset}/meta_init/model.pt",
        subsets="results/{dataset}/subsets/{design}.parquet",
        tasks="results/{dataset}/data/tasks.parquet",
        code=library_code("estimate_subsets.py"),
    output:
        "results/{dataset}/subset_values/gradient/{design}/chunk_{chunk}.parquet",
    log:
        "results/{dataset}/logs/estimate_subsets/{design}_{chunk}.log",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    params:
        chunk_size=config["subsets"]["chunk_size"],
        estimate=sorted_params(config["gradient_estimate"]),
        metric=config["evaluation"]["metric"],
    script:
        "../workflow_scripts/estimate_subsets.py"
