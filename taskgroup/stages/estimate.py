"""Stages of the fast path: project per-example gradients once, then value every subset."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from taskgroup.data import designs as subsets_lib
from taskgroup.data.tables import (
    PROJECTED,
    PROJECTION,
    TASKS,
    Z_PREFIX,
    read_table,
    write_table,
)
from taskgroup.estimate.linearized import ProjectedSplit, estimate_values
from taskgroup.estimate.projection import make_projector, project_examples
from taskgroup.models.network import load_checkpoint
from taskgroup.stages.common import load_task_data, prepare_torch

log = logging.getLogger(__name__)


def project_gradients(
    examples_path, tasks_path, model_path, projected_path, projection_path, structure: str,
    dim: int, factor_dim: int, kind: str, seed: int, batch_size: int, threads: int = 1,
) -> None:
    """Projected gradients and base outputs of every training and validation example at the
    meta-initialization (projected table), and the projection's description."""
    device = prepare_torch(threads)
    data, _ = load_task_data(examples_path, tasks_path)
    data = data.to(device)
    model = load_checkpoint(model_path, data.task_names).to(device)
    projector = make_projector(model, structure, dim, factor_dim, kind, seed).to(device)
    frames = []
    started = time.perf_counter()
    for split in ("train", "val"):
        tensors = data.splits[split]
        z, outputs = project_examples(
            model, projector, tensors.features, tensors.task_index, batch_size
        )
        frame = pd.DataFrame(
            z.cpu().numpy().astype(np.float32),
            columns=[f"{Z_PREFIX}{i:04d}" for i in range(z.shape[1])],
        )
        frame.insert(0, "base_output", outputs.cpu().numpy().astype(np.float32))
        frame.insert(0, "label", tensors.labels.cpu().numpy())
        frame.insert(0, "split", split)
        frame.insert(0, "task", np.asarray(data.task_names, dtype=object)[
            tensors.task_index.cpu().numpy()])
        frames.append(frame)
    seconds = time.perf_counter() - started
    table = pd.concat(frames, ignore_index=True)
    n_parameters = sum(p.numel() for p in model.parameters())
    theta_norm = float(torch.cat([p.detach().flatten() for p in model.parameters()]).norm())
    log.info(
        "%s projection (%s) of %d parameters to %d dimensions for %d examples in %.2f s "
        "(%.0f examples/s)", structure, kind, n_parameters, projector.dim, len(table),
        seconds, len(table) / max(seconds, 1e-9),
    )
    write_table(table, projected_path)
    write_table(
        pd.DataFrame(
            {
                "structure": [structure], "kind": [kind], "seed": [int(seed)],
                "dim": [int(dim)], "factor_dim": [int(factor_dim)],
                "projected_dim": [int(projector.dim)], "n_parameters": [int(n_parameters)],
                "theta_norm": [theta_norm], "seconds": [seconds],
            }
        ),
        projection_path,
    )


def load_projected(
    projected_path, task_names: list[str], device, task_types: list[str] | None = None
) -> dict[str, ProjectedSplit]:
    """The projected table as one :class:`ProjectedSplit` per split (train, val), with the
    regression mask from ``task_types`` (None = all binary)."""
    table = read_table(projected_path, PROJECTED)
    columns = [c for c in table.columns if c.startswith(Z_PREFIX)]
    index_of = {name: i for i, name in enumerate(task_names)}
    unknown = sorted(set(table["task"]) - set(index_of))
    if unknown:
        raise ValueError(f"{projected_path}: tasks {unknown[:5]} are not in the tasks table")
    regression = {
        name: kind == "regression"
        for name, kind in zip(task_names, task_types or ["binary"] * len(task_names))
    }
    splits = {}
    for split in ("train", "val"):
        rows = table[table["split"] == split]
        splits[split] = ProjectedSplit(
            z=torch.from_numpy(rows[columns].to_numpy(np.float32).copy()).to(device),
            base=torch.from_numpy(rows["base_output"].to_numpy(np.float32)).to(device),
            labels=torch.from_numpy(rows["label"].to_numpy(np.float32)).to(device),
            task_index=torch.from_numpy(
                rows["task"].map(index_of).to_numpy(np.int64)
            ).to(device),
            regression=torch.from_numpy(rows["task"].map(regression).to_numpy(bool)).to(device),
        )
    return splits


def gradient_valuer(
    projected_path, projection_path, model_path, tasks_path, l2: float, newton_steps: int,
    max_relative_shift, threads: int = 1, metric: str = "auto",
) -> tuple[list[str], Callable[[pd.DataFrame], pd.DataFrame]]:
    """The estimator "gradient" as a function: load the projected gradients, the projection
    and the meta-initialization once, and return ``(task_names, value)``, where
    ``value(subsets)`` maps a long subsets table (subset_id, task; any number of subsets) to
    its subset_values table (estimator "gradient", no design column; see
    :func:`taskgroup.estimate.linearized.estimate_subsets`). ``metric``: evaluation.metric."""
    device = prepare_torch(threads)
    tasks = read_table(tasks_path, TASKS).sort_values("task_index")
    names, types = tasks["task"].tolist(), tasks["task_type"].tolist()
    description = read_table(projection_path, PROJECTION).iloc[0]
    model = load_checkpoint(model_path, names)
    projector = make_projector(
        model, description["structure"], int(description["dim"]),
        int(description["factor_dim"]), description["kind"], int(description["seed"]),
    ).to(device)
    splits = load_projected(projected_path, names, device, types)

    def value(subsets: pd.DataFrame) -> pd.DataFrame:
        return estimate_values(
            splits["train"], splits["val"], subsets, names, l2, newton_steps,
            shift_norm=projector.shift_norms, theta_norm=float(description["theta_norm"]),
            max_relative_shift=max_relative_shift, metric=metric, task_types=types,
        )

    return names, value


def estimate_subsets(
    projected_path, projection_path, model_path, subsets_path, tasks_path, output_path,
    chunk: int, chunk_size: int, l2: float, newton_steps: int, max_relative_shift,
    threads: int = 1, metric: str = "auto",
) -> None:
    """Value every subset of one chunk with the linearized model (estimator "gradient");
    the metric column holds ``metric`` (evaluation.metric)."""
    _, value = gradient_valuer(
        projected_path, projection_path, model_path, tasks_path, l2, newton_steps,
        max_relative_shift, threads, metric,
    )
    mine = subsets_lib.read_chunk(subsets_path, chunk, chunk_size)
    values = value(mine)
    values["design"] = subsets_lib.design_of(mine, subsets_path)
    write_table(values, output_path)
