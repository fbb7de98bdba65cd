"""Stages of the fast path: project per-example gradients once, then value every subset."""

from __future__ import annotations

import logging
import time

import pandas as pd

from taskgroup.data import designs as subsets_lib
from taskgroup.data.tables import (
    L2_CURVE,
    PROJECTED,
    PROJECTION,
    TASK_SCALES,
    TASKS,
    chosen_candidate,
    read_table,
    write_table,
)
from taskgroup.estimate.projection import (
    from_description,
    make_projector,
    projection_batch_size,
)
from taskgroup.estimate.settings import (
    GradientEstimateSettings,
    ProjectionSettings,
    batch_memory_mb,
)
from taskgroup.estimate.valuers import (
    Valuer,
    gradient_valuer,
    project_data,
    projected_table,
    splits_from_table,
)
from taskgroup.models.network import load_checkpoint
from taskgroup.resources import BATCH_MB, PROJECTION_BATCH_EXAMPLES, PROJECTION_BYTES
from taskgroup.stages.common import load_task_data, prepare_torch

log = logging.getLogger(__name__)


def project_gradients(
    examples_path, tasks_path, model_path, projected_path, projection_path,
    settings: ProjectionSettings, memory_mb: float, threads: int = 1,
) -> None:
    """Projected gradients and base outputs of every training and validation example at the
    meta-initialization (projected table), and the projection's description (projection
    table: the projector's ``describe()``, nonzeros null unless sparse, and projected_dim,
    n_parameters, theta_norm). ``memory_mb``: the job's memory, which sets the examples
    projected at a time (see :func:`taskgroup.estimate.settings.batch_memory_mb`)."""
    device = prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = data.to(device)
    model = load_checkpoint(model_path, data.task_names).to(device)
    projector = make_projector(model, settings).to(device)
    batch_size = projection_batch_size(
        projector, batch_memory_mb(memory_mb), PROJECTION_BYTES, PROJECTION_BATCH_EXAMPLES
    )
    started = time.perf_counter()
    table = projected_table(project_data(model, projector, data, batch_size), data.task_names)
    seconds = time.perf_counter() - started
    n_parameters = sum(p.numel() for p in model.parameters())
    log.info(
        "%s projection (%s) of %d parameters to %d dimensions (%s) for %d examples, %d at a "
        "time, in %.2f s (%.0f examples/s)", settings.structure, settings.kind, n_parameters,
        projector.dim, "exact" if projector.exact else "projected", len(table), batch_size,
        seconds, len(table) / max(seconds, 1e-9),
    )
    write_table(table, projected_path)
    description = projector.describe()
    write_table(
        pd.DataFrame(
            {
                "structure": [description["structure"]], "kind": [description["kind"]],
                "seed": [int(description["seed"])], "dim": [int(description["dim"])],
                # Only the sparse structure uses nonzeros; it is null for the others.
                "nonzeros": pd.array([description.get("nonzeros")], dtype="Int64"),
                "preconditioner": [description["preconditioner"]],
                "projected_dim": [int(projector.dim)], "n_parameters": [int(n_parameters)],
                # in the metric the estimate measures its shifts in (the preconditioner's)
                "theta_norm": [projector.parameter_norm(model)],
            }
        ),
        projection_path,
    )


def read_gradient_valuers(
    projected_path, projection_path, model_path, tasks_path,
    settings: list[GradientEstimateSettings], threads: int = 1, metric: str = "auto",
    memory_mb: float | None = None, task_scales_path=None,
) -> tuple[list[str], list[Valuer]]:
    """Read the projected gradients, the projection and the meta-initialization once and
    return ``(task_names, valuers)``, one estimator "gradient" per entry of ``settings``
    (see :func:`taskgroup.estimate.valuers.gradient_valuer`). ``memory_mb``: the job's
    memory, which sets the subsets fitted at a time (None: BATCH_MB of
    :mod:`taskgroup.estimate.settings`); ``task_scales_path``: the task scales table, read
    for the settings with task_scales "auto" (see :func:`read_task_scales`)."""
    device = prepare_torch(threads)
    tasks = read_table(tasks_path, TASKS).sort_values("task_index")
    names, types = tasks["task"].tolist(), tasks["task_type"].tolist()
    description = read_table(projection_path, PROJECTION).iloc[0]
    model = load_checkpoint(model_path, names)
    projector = from_description(model, description).to(device)
    splits = splits_from_table(
        read_table(projected_path, PROJECTED), names, device, types, source=str(projected_path)
    )
    budget = float(BATCH_MB) if memory_mb is None else batch_memory_mb(memory_mb)
    valuers = [
        gradient_valuer(
            splits, projector, float(description["theta_norm"]), names, types, each, metric,
            memory_mb=budget, task_scales=read_task_scales(each, task_scales_path, names),
        )
        for each in settings
    ]
    return names, valuers


def read_task_scales(settings: GradientEstimateSettings, path, task_names: list[str]
                     ) -> pd.DataFrame | None:
    """The task scales table (schema TASK_SCALES) at ``path`` (written by
    :func:`taskgroup.stages.validate.calibrate_estimate`) when ``settings.task_scales`` is
    "auto", else None. Raises ValueError when the table
    is needed but not given, or lacks a task of ``task_names`` (it is stale)."""
    if not settings.scales_tasks:
        return None
    if path is None:
        raise ValueError('gradient_estimate.task_scales is "auto", but no task scales table '
                         "was given")
    table = read_table(path, TASK_SCALES)
    missing = sorted(set(task_names) - set(table["task"]))
    if missing:
        raise ValueError(f"{path}: no scale for the tasks {missing}; it is stale, rerun "
                         "calibrate_estimate")
    return table


def read_gradient_valuer(
    projected_path, projection_path, model_path, tasks_path,
    settings: GradientEstimateSettings, threads: int = 1, metric: str = "auto",
    memory_mb: float | None = None, task_scales_path=None,
) -> tuple[list[str], Valuer]:
    """:func:`read_gradient_valuers` for one ``settings``: ``(task_names, value)``."""
    names, (value,) = read_gradient_valuers(
        projected_path, projection_path, model_path, tasks_path, [settings], threads, metric,
        memory_mb, task_scales_path,
    )
    return names, value


def with_chosen_l2(settings: GradientEstimateSettings, l2_curve_path=None
                   ) -> GradientEstimateSettings:
    """``settings`` with l2 "auto" replaced by the chosen l2 of the l2 curve table at
    ``l2_curve_path`` (written by :func:`taskgroup.stages.validate.calibrate_estimate`);
    a numeric l2 is returned unchanged. Raises ValueError when l2 is "auto" and no table
    is given, or when the table does not mark exactly one row chosen."""
    if not settings.l2_is_auto:
        return settings
    if l2_curve_path is None:
        raise ValueError('gradient_estimate.l2 is "auto", but no l2 curve table was given')
    l2 = chosen_candidate(l2_curve_path, L2_CURVE, "l2")
    log.info("gradient_estimate.l2 auto: %g, chosen on the held-out subsets (%s)", l2,
             l2_curve_path)
    return settings.with_l2(l2)


def estimate_subsets(
    projected_path, projection_path, model_path, subsets_path, tasks_path, output_path,
    chunk: int, chunk_size: int, settings: GradientEstimateSettings, threads: int = 1,
    metric: str = "auto", memory_mb: float | None = None, l2_curve_path=None,
    task_scales_path=None,
) -> None:
    """Value every subset of one chunk with the linearized model (estimator "gradient");
    the metric column holds ``metric`` (evaluation.metric); ``memory_mb``: the job's memory
    (see :func:`read_gradient_valuer`); ``l2_curve_path``: the l2 curve table, needed when
    ``settings.l2`` is "auto" (see :func:`with_chosen_l2`); ``task_scales_path``: the task
    scales table, needed when ``settings.task_scales`` is "auto"."""
    _, value = read_gradient_valuer(
        projected_path, projection_path, model_path, tasks_path,
        with_chosen_l2(settings, l2_curve_path), threads, metric, memory_mb,
        task_scales_path,
    )
    mine = subsets_lib.read_chunk(subsets_path, chunk, chunk_size)
    values = value(mine)
    values["design"] = subsets_lib.design_of(mine, subsets_path)
    write_table(values, output_path)
