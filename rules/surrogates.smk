rule fit_surrogates:
    input:
        # Forward selection's sets, to compare (only with subsets.forward_selection on).
        **forward_comparison_inputs(),
        values=subset_values("random"),
        subsets="results/{dataset}/subsets/random.parquet",
        pairs=subset_values("pairs"),
        tasks=TASKS_TABLE,
        code=library_code("fit_surrogates.py"),
    output:
        **forward_comparison_outputs(),
        coefficients="results/{dataset}/surrogates/coefficients.parquet",
        quality="results/{dataset}/surrogates/quality.parquet",
        negative_transfer="results/{dataset}/surrogates/negative_transfer.parquet",
        selected="results/{dataset}/surrogates/selected_sources.parquet",
        figure=report(
            "results/{dataset}/surrogates/coefficients.png",
            caption="../report/surrogates.rst",
            category="Task modeling",
        ),
    log:
        "results/{dataset}/logs/fit_surrogates.log",
    # Reads and writes small tables: on a cluster it runs in the main Snakemake process.
    localrule: True
    conda:
        "../envs/taskgroup.yaml"
    resources:
        mem_mb=surrogates_mem_mb(),
    params:
        # When the pairs are sampled, only the sampled ones are scored.
        **pair_sample_params(),
        surrogates=surrogate_params(),
    script:
        "../workflow_scripts/fit_surrogates.py"
