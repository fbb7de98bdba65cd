from taskgroup.models.options import variant_options


def final_variant_options(wildcards):
    """The enabled options of the final-training variant {variant} (settings from
    training_options.final; see taskgroup.models.options.variant_options)."""
    return variant_options(FINAL_OPTIONS, wildcards.variant)


def final_diagnostics_output():
    """The diagnostics output of a group model job, when training_options.final.diagnostics
    is on."""
    if FINAL_DIAGNOSTICS:
        return {
            "diagnostics": "results/{dataset}/final/{variant}/{key}/diagnostics.parquet"
        }
    return {}


rule train_group_model:
    input:
        examples=EXAMPLES_TABLE,
        tasks=TASKS_TABLE,
        code=library_code("train_group_model.py"),
    output:
        **final_diagnostics_output(),
        results="results/{dataset}/final/{variant}/{key}.parquet",
        models=expand(
            "results/{{dataset}}/final/{{variant}}/{{key}}/model_seed{seed}.pt",
            seed=TRAINING_SEEDS,
        ),
    log:
        "results/{dataset}/logs/train_group_model/{variant}/{key}.log",
    conda:
        "../envs/taskgroup.yaml"
    threads: 1
    resources:
        gpu=1,
    params:
        # The options the variant {variant} turns on, with their settings ({} = plain).
        options=final_variant_options,
        # The group's tasks; {key} is a hash of them, so a group's job and model are shared
        # by every grouping that has the group and do not rerun when other groups change.
        members=group_members,
        hidden_sizes=config["model"]["hidden_sizes"],
        training=training_params("final"),
        seeds=TRAINING_SEEDS,
        metric=config["evaluation"]["metric"],
    script:
        "../workflow_scripts/train_group_model.py"
