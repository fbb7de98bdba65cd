"""Stage of task modeling: linear surrogates, negative-transfer calls and their scores."""

from __future__ import annotations

import logging

from taskgroup.data.tables import (
    FORWARD_SELECTION,
    SUBSET_VALUES,
    SUBSETS,
    TASKS,
    read_table,
    write_table,
)
from taskgroup.group import surrogates as surrogates_lib
from taskgroup.report import plots

log = logging.getLogger(__name__)


def fit_surrogates(
    values_path, subsets_path, pairs_path, tasks_path, coefficients_path, quality_path,
    negative_transfer_path, selected_path, figure_path,
    settings: surrogates_lib.SurrogateSettings, every_pair: bool, forward_path=None,
    comparison_path=None,
) -> None:
    """Fit the per-target surrogates on the random design (plus the singletons when
    ``settings.anchor_singletons``), score their negative-transfer calls (at
    ``settings.threshold``) against the pairwise design, and write the tables and the
    coefficient heatmap. ``every_pair``: the pair design holds every pair (a missing one is
    an error); False: a sample of pairs, and only the sampled ones are scored.

    With ``forward_path`` (the forward_selection table) also compare, per target, the
    surrogate's selected sources with forward selection's (forward_comparison table, to
    ``comparison_path``)."""
    if (forward_path is None) != (comparison_path is None):
        raise ValueError(
            f"forward_path = {forward_path!r} and comparison_path = {comparison_path!r}: give "
            f"both (forward selection enabled) or neither"
        )
    tasks = read_table(tasks_path, TASKS)
    names = tasks.sort_values("task_index")["task"].tolist()
    subsets = read_table(subsets_path, SUBSETS)
    values = read_table(values_path, SUBSET_VALUES)
    pair_values = read_table(pairs_path, SUBSET_VALUES)
    if settings.anchor_singletons:
        subsets, values = surrogates_lib.with_singletons(subsets, values, pair_values)
    coefficients, quality = surrogates_lib.fit(subsets, values, names, settings)
    pairwise = surrogates_lib.pairwise_transfer(pair_values, names, every_pair=every_pair)
    if not every_pair:
        log.info(
            "negative transfer scored on the %d sampled ordered pairs of the pair design (of "
            "%d)", len(pairwise), len(names) * (len(names) - 1),
        )
    threshold = settings.threshold
    scores = surrogates_lib.score_negative_transfer(coefficients, pairwise, threshold)
    overall = scores[scores["level"] == "overall"].iloc[0]
    log.info(
        "surrogates of %d targets: held-out R^2 median %.3f, Spearman median %.3f; "
        "negative transfer (coefficient > %g) against pairwise truth: precision %.3f, "
        "recall %.3f, F1 %.3f over %d pairs (%d truly negative)",
        len(names), quality["r2"].median(), quality["spearman"].median(), threshold,
        overall["precision"], overall["recall"], overall["f1"], overall["n_pairs"],
        int(overall["tp"] + overall["fn"]),
    )
    write_table(coefficients, coefficients_path)
    write_table(quality, quality_path)
    write_table(scores, negative_transfer_path)
    write_table(surrogates_lib.selected_sources(coefficients, threshold), selected_path)
    if forward_path is not None:
        comparison = surrogates_lib.compare_with_forward(
            coefficients, read_table(forward_path, FORWARD_SELECTION), threshold
        )
        log.info(
            "surrogate vs forward selection: mean Jaccard %.3f (equal-size top sources %.3f); "
            "mean sources selected: surrogate %.1f, forward %.1f",
            comparison["jaccard"].mean(), comparison["top_jaccard"].mean(),
            comparison["n_surrogate"].mean(), comparison["n_forward"].mean(),
        )
        write_table(comparison, comparison_path)
    plots.surrogate_coefficients(coefficients, names, figure_path)
