"""Forward selection of source tasks per target task, with any subset valuer as the oracle.

:func:`greedy_forward` grows one target's subset greedily; :func:`select_forward` runs it for
every target task i (in task order): it starts from {i} and adds, one at a time, the other
task whose addition gives the lowest f_i(S), while that lowers f_i(S) by more than
``min_improvement`` and S has fewer than ``max_size`` tasks. The oracle f_i(S) is a valuer
(see :mod:`taskgroup.estimate.valuers`), called once per step on the batch of candidate
subsets.

Every distinct subset is valued once and numbered in order of first evaluation (targets in
task order, candidates in task order), so the ids, and with the valuer "finetune" the
per-subset seeds derived from them, are the same for the same settings. A subset that several
targets evaluate (e.g. the pair {i, j} for targets i and j) keeps its first id and value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from taskgroup.data.designs import design_table
from taskgroup.data.tables import SUBSET_VALUES, check_columns

log = logging.getLogger(__name__)

DESIGN = "forward"
# The oracle's table is a subset_values table before its design column is set.
ORACLE_COLUMNS = {column: kind for column, kind in SUBSET_VALUES.items() if column != "design"}


def greedy_forward(
    target, candidates, value, max_size: int, min_improvement: float
) -> list[tuple[int, tuple, float]]:
    """Greedy forward selection of source tasks for one ``target`` task.

    ``value(subsets)`` is a batch oracle: given a list of subsets (sorted tuples of task ids,
    each containing ``target``) it returns an array of the same length with the target's loss
    after training on each subset (lower is better). Selection starts at ``(target,)``; each step
    evaluates, in one ``value`` call, the current subset plus each remaining candidate, and adds
    the candidate with the lowest loss (ties: the earliest in ``candidates``) if that loss is
    more than ``min_improvement`` below the current loss. It stops when no candidate improves by
    more than ``min_improvement``, when the subset has ``max_size`` tasks (target included) or
    when the candidates run out.

    Task ids (target, candidates) may be ints or strings, as long as they sort together.

    Returns the accepted path, a list of ``(step, subset, loss)``: step 0 is ``(target,)`` with
    its own loss; step t >= 1 is the subset after the t-th addition with the loss the oracle gave
    it. The last entry is the selected subset; rejected candidates are not listed (the oracle
    sees every evaluation, so a caller can record them there). ``value`` is called
    1 + (number of steps attempted) times.
    """
    candidates = list(candidates)
    if target in candidates:
        raise ValueError(f"greedy_forward: the target {target!r} is among the candidates")
    if len(set(candidates)) != len(candidates):
        raise ValueError("greedy_forward: candidates contain duplicates")
    if max_size < 1:
        raise ValueError(f"greedy_forward: max_size = {max_size} must be at least 1")
    if min_improvement < 0:
        raise ValueError(f"greedy_forward: min_improvement = {min_improvement} must be >= 0")

    def evaluate(batch):
        losses = np.asarray(value(batch), dtype=float).reshape(-1)
        if losses.shape != (len(batch),):
            raise ValueError(
                f"greedy_forward: value() returned {losses.size} losses for {len(batch)} subsets"
            )
        if not np.isfinite(losses).all():
            raise ValueError(f"greedy_forward: value() returned a non-finite loss: {losses}")
        return losses

    current = (target,)
    current_loss = float(evaluate([current])[0])
    path = [(0, current, current_loss)]
    remaining = candidates
    while len(current) < max_size and remaining:
        batch = [tuple(sorted(current + (source,))) for source in remaining]
        losses = evaluate(batch)
        best = int(np.argmin(losses))
        if not losses[best] < current_loss - min_improvement:
            break
        current, current_loss = batch[best], float(losses[best])
        remaining = remaining[:best] + remaining[best + 1 :]
        path.append((len(path), current, current_loss))
    return path


@dataclass(frozen=True)
class ForwardSettings:
    """When forward selection stops growing a target's subset: at ``max_size`` tasks (the
    target included), or when no candidate lowers the target's loss by more than
    ``min_improvement`` (>= 0)."""

    max_size: int
    min_improvement: float


def select_forward(
    value_subsets: Callable[[pd.DataFrame], pd.DataFrame],
    task_names: list[str],
    settings: ForwardSettings,
    split: str = "val",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forward selection (:func:`greedy_forward` with ``settings``) for every target task,
    with ``value_subsets`` as the oracle.

    ``value_subsets(subsets)`` takes a long subsets table (subset_id (int64), task (str), one
    row per member) and returns its subset_values table (one row per subset, member task and
    split, with the ``split`` loss of every member). The target's ``split`` loss is the
    oracle's value.

    Raises ValueError unless 1 <= settings.max_size <= len(task_names), or when the oracle
    misses a target's loss. Returns ``(values, selection)``:

    values: every row ``value_subsets`` returned, for every subset evaluated by any target
    (accepted or not), subset ids 0..n-1 in order of first evaluation, with design
    "forward" (schema subset_values).
    selection: the accepted path of every target (schema forward_selection, see
    :mod:`taskgroup.data.tables`).
    """
    max_size = settings.max_size
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
                table = design_table(new, task_names)
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
        path = greedy_forward(
            target, candidates, value(target), max_size, settings.min_improvement
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
