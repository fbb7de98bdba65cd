"""Stage of the forward-selection design: greedy source selection per target task
(:func:`taskgroup.estimate.forward.select_forward`), valued by the configured estimator
(``gradient``: the linearized estimate from the projected gradients, as in
:func:`taskgroup.stages.estimate.estimate_subsets`; ``finetune``: fine-tuning the
meta-initialization, as in :func:`taskgroup.stages.finetune.finetune_subsets`)."""

from __future__ import annotations

import logging

from taskgroup.data.tables import write_table
from taskgroup.estimate.finetune import FinetuneSettings
from taskgroup.estimate.forward import ForwardSettings, select_forward
from taskgroup.estimate.settings import GradientEstimateSettings
from taskgroup.stages.estimate import read_gradient_valuer, with_chosen_l2
from taskgroup.stages.finetune import read_finetune_valuer

log = logging.getLogger(__name__)


def forward_selection(
    estimator: str, tasks_path, model_path, values_path, selection_path,
    settings: ForwardSettings, projected_path=None, projection_path=None, examples_path=None,
    estimate: GradientEstimateSettings | None = None, finetune: FinetuneSettings | None = None,
    threads: int = 1, metric: str = "auto", l2_curve_path=None, lr_curve_path=None,
    task_scales_path=None,
) -> None:
    """Run :func:`taskgroup.estimate.forward.select_forward` with ``settings`` and the
    configured estimator as the oracle; write the values (subset_values, design "forward")
    and the selection (forward_selection) tables.

    ``estimator`` "gradient" needs ``projected_path``, ``projection_path`` and ``estimate``;
    "finetune" needs ``examples_path`` and ``finetune``; another one raises ValueError.
    ``metric``: evaluation.metric (the values' metric column). ``l2_curve_path``: the l2
    curve table, needed with "gradient" when ``estimate.l2`` is "auto" (see
    :func:`taskgroup.stages.estimate.with_chosen_l2`); ``task_scales_path``: the task scales
    table, needed with "gradient" when ``estimate.task_scales`` is "auto";
    ``lr_curve_path``: the lr curve table,
    needed with "finetune" when ``finetune``'s lr is "auto" (see
    :func:`taskgroup.stages.finetune.with_chosen_lr`)."""
    if estimator == "gradient":
        names, value = read_gradient_valuer(
            projected_path, projection_path, model_path, tasks_path,
            with_chosen_l2(estimate, l2_curve_path), threads, metric,
            task_scales_path=task_scales_path,
        )
    elif estimator == "finetune":
        names, value = read_finetune_valuer(
            examples_path, tasks_path, model_path, finetune, threads, metric, lr_curve_path
        )
    else:
        raise ValueError(f"estimator = {estimator!r}; expected 'gradient' or 'finetune'")
    values, selection = select_forward(value, names, settings)
    sizes = selection.groupby("target", sort=False)["size"].max()
    log.info(
        "forward selection (%s, max_size %d, min_improvement %g): %d targets, %d subsets "
        "valued; selected sizes (target included) %s",
        estimator, settings.max_size, settings.min_improvement, len(names),
        values["subset_id"].nunique(), sizes.value_counts().sort_index().to_dict(),
    )
    write_table(values, values_path)
    write_table(selection, selection_path)
