# With naive_mtl in evaluation.baselines: the answer, chosen on held-out validation rows.
if RECOMMEND:

    rule recommend:
        input:
            per_task="results/{dataset}/evaluation/per_task.parquet",
            values=subset_values("random"),
            tasks=TASKS_TABLE,
            # the estimator's noise floor, when the estimator validation runs
            validation=validation_per_subset(),
            code=library_code("recommend.py"),
        output:
            groups="results/{dataset}/recommendation/groups.parquet",
            verdict="results/{dataset}/recommendation/verdict.parquet",
            signal="results/{dataset}/recommendation/signal.parquet",
            choice="results/{dataset}/recommendation/per_task_choice.parquet",
            markdown="results/{dataset}/recommendation/verdict.md",
            html=report(
                "results/{dataset}/recommendation/verdict.html",
                caption="../report/recommendation.rst",
                category="Recommendation",
            ),
        log:
            "results/{dataset}/logs/recommend.log",
        conda:
            "../envs/taskgroup.yaml"
        params:
            # Every clustered grouping, naive MTL and STL (never planted or random), trained
            # with the first final-training variant.
            candidates=recommendation_candidates(),
            variant=VARIANTS[0],
            settings=recommendation_params(),
            # The method of the signal check's many clusterings.
            method=config["recommendation"]["check_method"],
            clustering=clustering_params(),
            auto_folds=config["clustering"]["auto_folds"],
            metric=config["evaluation"]["metric"],
        script:
            "../workflow_scripts/recommend.py"
