"""Stage of the forward-selection design: greedy source selection per target task, valued
by the configured estimator.

For every target task i (in task order), :func:`taskgroup.data.designs.forward_selection` starts
from {i} and adds, one at a time, the other task whose addition gives the lowest f_i(S),
while that lowers f_i(S) by more than ``min_improvement`` and S has fewer than ``max_size``
tasks. The oracle f_i(S) is the configured estimator (``gradient``: the linearized estimate
from the projected gradients, as in :func:`taskgroup.stages.estimate.estimate_subsets`;
``finetune``: fine-tuning the meta-initialization, as in
:func:`taskgroup.stages.finetune.finetune_subsets`), called once per step on the batch of
candidate subsets.

Every distinct subset is valued once and numbered in order of first evaluation (targets in
task order, candidates in task order), so the ids, and with ``finetune`` the per-subset
seeds derived from them, are the same for the same config. A subset that several targets
evaluate (e.g. the pair {i, j} for targets i and j) keeps its first id and value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from taskgroup.data import designs as subsets_lib
from taskgroup.data.tables import SUBSET_VALUES, check_columns, write_table
from taskgroup.stages.estimate import gradient_valuer
from taskgroup.stages.finetune import finetune_valuer

log = logging.getLogger(__name__)

DESIGN = "forward"
# The oracle's table is a subset_values table before its design column is set.
ORACLE_COLUMNS = {column: kind for column, kind in SUBSET_VALUES.items() if column != "design"}


def select_forward(
    value_subsets: Callable[[pd.DataFrame], pd.DataFrame],
    task_names: list[str],
    max_size: int,
    min_improvement: float = 0.0,
    split: str = "val",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forward selection for every target task, with ``value_subsets`` as the oracle.

    ``value_subsets(subsets)`` takes a long subsets table (subset_id (int64), task (str), one
    row per member) and returns its subset_values table (one row per subset, member task and
    split, with the ``split`` loss of every member). The target's ``split`` loss is the
    oracle's value.

    Returns ``(values, selection)``:

    values: every row ``value_subsets`` returned, for every subset evaluated by any target
    (accepted or not), subset ids 0..n-1 in order of first evaluation, with design
    "forward" (schema subset_values).
    selection: the accepted path of every target (schema forward_selection, see
    :mod:`taskgroup.data.tables`).
    """
    if not 1 <= max_size <= len(task_names):
        raise ValueError(
            f"forward selection: max_size = {max_size} must be between 1 and the number of "
            f"tasks k = {len(task_names)}"
        )
    index_of = {name: index for index, name in enumerate(task_names)}
    ids: dict[tuple[int, ...], int] = {}
    losses: dict[tuple[int, int], float] = {}
    frames = []
    lookups = 0
    started = time.perf_counter()

    def value(target: int):
        def oracle(batch: list[tuple[int, ...]]) -> np.ndarray:
            nonlocal lookups
            lookups += len(batch)
            new = [subset for subset in dict.fromkeys(batch) if subset not in ids]
            if new:
                first = len(ids)
                table = subsets_lib.design_table(new, task_names)
                table["subset_id"] += first
                ids.update({subset: first + offset for offset, subset in enumerate(new)})
                values = value_subsets(table)
                check_columns(values, ORACLE_COLUMNS, "forward selection oracle")
                rows = values[values["split"] == split]
                losses.update(
                    zip(
                        zip(rows["subset_id"].astype(int), rows["task"].map(index_of)),
                        rows["loss"].astype(float),
                    )
                )
                frames.append(values)
            missing = [subset for subset in batch if (ids[subset], target) not in losses]
            if missing:
                raise ValueError(
                    f"forward selection: the oracle returned no {split!r} loss of task "
                    f"{task_names[target]!r} for subsets {missing[:3]}"
                )
            return np.array([losses[(ids[subset], target)] for subset in batch])

        return oracle

    rows = []
    k = len(task_names)
    for target in range(k):
        candidates = [index for index in range(k) if index != target]
        path = subsets_lib.forward_selection(
            target, candidates, value(target), max_size, min_improvement
        )
        previous: tuple[int, ...] = ()
        for step, subset, loss in path:
            (added,) = set(subset) - set(previous)
            rows.append(
                (task_names[target], step, task_names[added], len(subset), ids[subset], loss)
            )
            previous = subset
        elapsed = time.perf_counter() - started
        log.info(
            "target %s (%d/%d): %d source(s) added, loss %.4f -> %.4f; %d subsets valued "
            "(%d looked up) in %.1f s (%.1f subsets/s)",
            task_names[target], target + 1, k, len(path) - 1, path[0][2], path[-1][2],
            len(ids), lookups, elapsed, len(ids) / max(elapsed, 1e-9),
        )
    selection = pd.DataFrame(
        rows, columns=["target", "step", "added", "size", "subset_id", "loss"]
    ).astype({"step": np.int64, "size": np.int64, "subset_id": np.int64, "loss": float})
    values = pd.concat(frames, ignore_index=True)
    values["design"] = DESIGN
    return values, selection


def forward_selection(
    estimator: str, tasks_path, model_path, values_path, selection_path, max_size: int,
    min_improvement: float, projected_path=None, projection_path=None, examples_path=None,
    estimate: dict | None = None, training: dict | None = None, seed: int | None = None,
    threads: int = 1, metric: str = "auto",
) -> None:
    """Run :func:`select_forward` with the configured estimator as the oracle and write the
    values (subset_values, design "forward") and the selection (forward_selection) tables.

    ``estimator`` "gradient" needs ``projected_path``, ``projection_path`` and ``estimate``
    (the gradient_estimate section: l2, newton_steps, max_relative_shift); "finetune" needs
    ``examples_path``, ``training`` (epochs, lr, batch_size, weight_decay) and ``seed``.
    ``metric``: evaluation.metric (the values' metric column)."""
    if estimator == "gradient":
        names, value = gradient_valuer(
            projected_path, projection_path, model_path, tasks_path, estimate["l2"],
            estimate["newton_steps"], estimate["max_relative_shift"], threads, metric,
        )
    elif estimator == "finetune":
        names, value = finetune_valuer(
            examples_path, tasks_path, model_path, training, seed, threads, metric
        )
    else:
        raise ValueError(f"estimator = {estimator!r}; expected 'gradient' or 'finetune'")
    values, selection = select_forward(value, names, max_size, min_improvement)
    sizes = selection.groupby("target", sort=False)["size"].max()
    log.info(
        "forward selection (%s, max_size %d, min_improvement %g): %d targets, %d subsets "
        "valued; selected sizes (target included) %s",
        estimator, max_size, min_improvement, len(names), values["subset_id"].nunique(),
        sizes.value_counts().sort_index().to_dict(),
    )
    write_table(values, values_path)
    write_table(selection, selection_path)
