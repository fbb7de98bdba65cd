rule evaluate_groupings:
    input:
        unpack(grouping_files),
        results=group_model_files,
        tasks=TASKS_TABLE,
        decisions="results/{dataset}/data/run_decisions.parquet",
        subsets="results/{dataset}/subsets/random.parquet",
        code=library_code("evaluate_groupings.py"),
    output:
        **variant_comparison_outputs(),
        decisions="results/{dataset}/evaluation/run_decisions.parquet",
        decisions_html=report(
            "results/{dataset}/evaluation/run_decisions.html",
            caption="../report/run_decisions.rst",
            category="Evaluation",
        ),
        per_task="results/{dataset}/evaluation/per_task.parquet",
        summary="results/{dataset}/evaluation/summary.parquet",
        summary_html=report(
            "results/{dataset}/evaluation/summary.html",
            caption="../report/summary.rst",
            category="Evaluation",
        ),
    log:
        "results/{dataset}/logs/evaluate_groupings.log",
    # Reads and writes small tables: on a cluster it runs in the main Snakemake process.
    localrule: True
    conda:
        "../envs/taskgroup.yaml"
    params:
        groupings=GROUPINGS,
        estimator=config["estimator"],
    script:
        "../workflow_scripts/evaluate_groupings.py"


rule plot_figures:
    input:
        affinity=f"results/{{dataset}}/affinity/{SOURCES[0]}.parquet",
        clusters=f"results/{{dataset}}/groupings/{PRIMARY}.parquet",
        per_task="results/{dataset}/evaluation/per_task.parquet",
        tasks=TASKS_TABLE,
        code=library_code("plot_figures.py"),
    output:
        heatmap=report(
            "results/{dataset}/evaluation/affinity_heatmap.png",
            caption="../report/heatmap.rst",
            category="Affinity",
        ),
        gain=report(
            "results/{dataset}/evaluation/gain_over_naive_mtl.png",
            caption="../report/gain.rst",
            category="Evaluation",
        ),
    log:
        "results/{dataset}/logs/plot_figures.log",
    # Reads and writes small tables: on a cluster it runs in the main Snakemake process.
    localrule: True
    conda:
        "../envs/taskgroup.yaml"
    params:
        primary=PRIMARY,
        variant=VARIANTS[0],
    script:
        "../workflow_scripts/plot_figures.py"


# With "plain" and another variant in training_options.final.variants.
if COMPARE_VARIANTS:

    rule plot_variants:
        input:
            changes="results/{dataset}/evaluation/variant_changes.parquet",
            clusters=f"results/{{dataset}}/groupings/{PRIMARY}.parquet",
            code=library_code("plot_variants.py"),
        output:
            report(
                "results/{dataset}/evaluation/variant_changes.png",
                caption="../report/variants.rst",
                category="Within-group training",
            ),
        log:
            "results/{dataset}/logs/plot_variants.log",
        localrule: True
        conda:
            "../envs/taskgroup.yaml"
        params:
            primary=PRIMARY,
        script:
            "../workflow_scripts/plot_variants.py"


# With training_options.final.diagnostics enabled.
if FINAL_DIAGNOSTICS:

    rule diagnose_transfer:
        input:
            unpack(grouping_files),
            diagnostics=group_diagnostics_files,
            code=library_code("diagnose_transfer.py"),
        output:
            gap="results/{dataset}/evaluation/generalization_gap.parquet",
            figure=report(
                "results/{dataset}/evaluation/transfer_diagnostics.png",
                caption="../report/diagnostics.rst",
                category="Within-group training",
            ),
        log:
            "results/{dataset}/logs/diagnose_transfer.log",
        localrule: True
        conda:
            "../envs/taskgroup.yaml"
        params:
            groupings=GROUPINGS,
            primary=PRIMARY,
            variant=VARIANTS[0],
        script:
            "../workflow_scripts/diagnose_transfer.py"
