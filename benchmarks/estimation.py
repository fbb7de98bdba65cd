"""Benchmark: the gradient estimator's projection settings against real fine-tuning.

Usage:
  python benchmarks/estimation.py [--config config/config.yaml] [--hidden 64 64]
      [--subsets 600] [--meta-epoch best] [--l2 0.05 0.5] [--flow-steps 1 4]
      [--curvature-tolerance 0 0.1]
      [--finetune-lr 0.001] [--task-scales] [--noise-draws 0] [--repeats 3]
      [--reference-seeds 1]
      [--settings exact sparse:1024:4 kronecker:1024 dense:1024 eigen:1024@adam svd:1024
                  energy:1024@adam/subset]

On the planted dataset of the config, with the trunk widths ``--hidden`` (default: the
config's model.hidden_sizes), the meta-initialization is trained once and m subsets are
fine-tuned for real twice (finetune.seed and finetune.seed + 1), once per run; with
``--reference-seeds R``, 2 R times (the next seeds), the reference being the mean of the
first R fine-tunings of each subset and the floor's second reference the mean of the other
R (a mean of fine-tunings carries less seed noise: the floor is then that of a reference
one can reproduce; real fine-tuning is still timed for one fine-tuning per subset). Every
projection setting (``structure:dim[:nonzeros]``, ``exact`` for no projection, or
``unprojected``: no projection either, the same estimate solved in example space, see
:func:`unprojected_values`, which runs where ``exact``'s p x p systems cannot; or
``svd:dim``: the top ``dim`` right singular vectors of the full training gradients, see
:func:`singular_basis`, a basis the library does not build; each with an
optional ``@adam`` or ``@none``: the preconditioner, default the config's, and an optional
``/fixed`` or ``/subset``: gradient_estimate.step_scale, default the config's) is then run in a
fresh process (so that its peak memory is its own) and compared with the same references.
For each it prints: d, gradient collection + projection time as a share of one training
epoch over all tasks, the two timed in turn in that process (proj_epochs in wall seconds,
proj_epochs_cpu in CPU seconds; the epoch printed first is the parent's), estimate
throughput (subsets per second, projection excluded; every time the median of ``--repeats``
timings), the process's peak memory above its footprint after loading the data and the
meta-initialization, the speedup of the whole gradient path over real fine-tuning of the
same subsets in wall seconds and in CPU seconds (speedup_cpu: both sides run on one thread,
and their CPU time is not stretched by other processes on a shared machine), and the
agreement with real fine-tuning (median relative error, within-task Spearman, normalized
affinity distance, ARI of the clusters from the config's primary method), next to the
real-vs-real floor and the no-change estimate; with ``--l2``, ``--flow-steps`` and
``--curvature-tolerance``, one row per combination of values, each with its own timing.
The fine-tuning rate is ``--finetune-lr``, or the config's finetune.lr; when that is
"auto", the workflow's choice
(:func:`taskgroup.stages.validate.lr_curve_on`) is made on the first validation.n_subsets
subsets first and its curve printed. With ``--task-scales`` each estimate is printed a
second time with its task scales (see :mod:`taskgroup.estimate.task_scales`), fitted on the
first validation.n_subsets subsets against the second reference as the workflow
fits them, and compared with the first seed's on all subsets. Every row also prints
affinity_corr, the correlation of its normalized affinity's off-diagonal entries with the
reference's; with ``--noise-draws N``, ari_same_corr: the median ARI, over N draws, of the
reference's clusters with the clusters of the reference's affinity plus symmetric Gaussian
noise scaled to that correlation (see :func:`noise_matched_ari`): the ARI that an
estimate's clusters would get from an error of its size that follows no structure, so that
an ARI below the target can be told apart from a reference whose clusters do not survive
any error of that size. One thread per process; nothing is asserted.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import multiprocessing
import resource
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from common import ROOT, validated_config

from taskgroup.data.datasets.planted import generate_planted, planted_spec
from taskgroup.data.designs import random_design
from taskgroup.data.examples import build_task_data
from taskgroup.estimate.finetune import FinetuneSettings
from taskgroup.estimate.linearized import (
    example_space_flow,
    linearized_values,
    loss_derivatives,
    member_lists,
    member_values_table,
    membership,
)
from taskgroup.estimate.projection import make_projector
from taskgroup.estimate.settings import BATCH_MB, GradientEstimateSettings, ProjectionSettings
from taskgroup.estimate.symmetric import top_eigenpairs
from taskgroup.estimate.task_scales import fit_task_scales, scale_changes
from taskgroup.estimate.valuers import finetune_valuer, gradient_valuer, project_data
from taskgroup.group.affinity import affinity_table, square
from taskgroup.group.clustering import ClusteringSettings, partition
from taskgroup.group.groupings import adjusted_rand_index
from taskgroup.models.metrics import resolve_metrics
from taskgroup.models.network import MultiHeadNet
from taskgroup.models.training import TrainSettings, fit, train_new_model
from taskgroup.report.recommendation import off_diagonal_correlation
from taskgroup.report.validation import agreement, reference_clusters
from taskgroup.stages.validate import lr_curve_on, meta_validation_loss

# Examples projected at a time (the stage derives it from its memory; 4096 is its cap).
PROJECTION_BATCH = 4096


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def start_peak() -> float:
    """Reset the process's peak resident memory to its current footprint (Linux: ``5`` to
    /proc/self/clear_refs) and return that footprint in MB; elsewhere, the peak so far."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_mb("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_since(footprint: float) -> float:
    """Peak resident memory (MB) above ``footprint`` since :func:`start_peak`."""
    try:
        return _status_mb("VmHWM") - footprint
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - footprint


def training(section: dict, best_epoch: bool = False) -> TrainSettings:
    return TrainSettings(section["epochs"], section["lr"], section["batch_size"],
                         section["weight_decay"], select_best_epoch=best_epoch)


def projection_settings(text: str, config: dict) -> ProjectionSettings:
    """``exact`` (a size above any model's: no projection) or structure:dim[:nonzeros],
    either followed by @preconditioner (default: the config's)."""
    kind, seed = config["projection"]["kind"], config["projection"]["seed"]
    text, _, preconditioner = text.partition("@")
    preconditioner = preconditioner or config["projection"]["preconditioner"]
    if text == "exact":
        return ProjectionSettings("dense", kind, seed, 10**9, None, preconditioner)
    structure, dim, *rest = text.split(":")
    nonzeros = int(rest[0]) if rest else (4 if structure == "sparse" else None)
    return ProjectionSettings(structure, kind, seed, int(dim), nonzeros, preconditioner)


def gram(left: torch.Tensor, right: torch.Tensor, rows: int = 512) -> torch.Tensor:
    """left right^T (n, m) in float64, from float32 rows ``rows`` at a time (no float64
    copy of a whole (n, p) matrix)."""
    out = torch.empty(left.shape[0], right.shape[0], dtype=torch.float64)
    for start in range(0, right.shape[0], rows):
        block = right[start : start + rows].double()
        for first in range(0, left.shape[0], rows):
            out[first : first + rows, start : start + rows] = (
                left[first : first + rows].double() @ block.T
            )
    return out


def unprojected_values(splits, subsets, names, metric_names, l2, flow_steps):
    """The linearized estimate with every coordinate kept, solved in example space (the
    library's :func:`taskgroup.estimate.linearized.example_space_flow`, on the Gram of the
    full per-example gradients), so the solve is n_S x n_S whatever p. The validation
    losses are the library's (linearized_values) on the shifts Z_S^T a."""
    train, val = splits["train"], splits["val"]
    first, second = loss_derivatives(
        train.base.double(), train.labels.double(), train.regression_mask()
    )
    kernel = gram(train.z, train.z)
    ids, members = membership(subsets, names)
    holding = member_lists(members)
    weights = torch.zeros(len(ids), train.z.shape[1], dtype=torch.float64)
    for row in range(len(ids)):
        tasks = holding[row][holding[row] < len(names)]
        rows = torch.nonzero(torch.isin(train.task_index, tasks)).squeeze(1)
        coefficients = example_space_flow(
            kernel[rows][:, rows], first[rows], second[rows], l2, flow_steps
        )
        weights[row] = (coefficients.float() @ train.z[rows]).double()
    loss, accuracy = linearized_values(val, weights, members, metric_names, names,
                                       only_members=True)
    return member_values_table(ids, members, names, loss, accuracy)


@dataclasses.dataclass
class OrthonormalColumns:
    """What the benchmark asks of a projector, for ``dim`` orthonormal columns V in the
    metric of the projector ``full`` that keeps every coordinate: ||V w|| = ||w||, and
    that projector's parameter norm."""

    full: object
    dim: int
    exact: ClassVar[bool] = False

    @staticmethod
    def shift_norms(weights: torch.Tensor) -> torch.Tensor:
        return weights.norm(dim=1)

    def parameter_norm(self, model) -> float:
        return self.full.parameter_norm(model)


def singular_basis(splits, dim: int):
    """The splits' full gradients (the exact projector's z, (n, p)) projected on the top
    ``dim`` right singular vectors V (p, dim) of the training split's: V = Z^T U / s from
    the top eigenpairs (U, s^2) of the Gram Z Z^T (n x n), so V^T V = I and the training
    rows become U s. Every per-example gradient is materialized (n p floats per split):
    for comparison with the library's bases, not a projector. Raises ValueError when
    ``dim`` exceeds the training examples."""
    train = splits["train"].z
    if dim > train.shape[0]:
        raise ValueError(f"svd:{dim}: at most the {train.shape[0]} training examples")
    values, vectors = top_eigenpairs(gram(train, train), count=dim)
    basis = ((train.T.double() @ vectors) / values.clamp(min=1e-300).sqrt()).float()
    return {name: dataclasses.replace(split, z=split.z @ basis) for name, split in splits.items()}


def noise_matched_ari(reference: np.ndarray, labels: np.ndarray, correlation: float,
                      method: str, clustering: ClusteringSettings, draws: int,
                      seed: int = 0) -> float:
    """The median over ``draws`` of the ARI between ``labels`` (the clusters of the
    (k, k) affinity ``reference``) and the clusters, by ``method`` into as many, of
    ``reference`` plus symmetric Gaussian noise (zero diagonal) whose standard deviation
    sd sqrt(1 / c^2 - 1), sd that of the reference's off-diagonal entries, gives them the
    correlation c = ``correlation`` with the reference's in expectation; NaN when
    ``correlation`` is (an estimate whose affinity is constant)."""
    if not np.isfinite(correlation):
        return float("nan")
    off = ~np.eye(reference.shape[0], dtype=bool)
    spread = np.nanstd(reference[off]) * np.sqrt(max(1.0 / max(correlation, 1e-6) ** 2 - 1, 0))
    generator = np.random.default_rng(seed)
    filled = np.nan_to_num(reference)
    scores = []
    for _ in range(draws):
        noise = generator.normal(size=reference.shape)
        noise = (noise + noise.T) / np.sqrt(2)
        np.fill_diagonal(noise, 0.0)
        noisy = partition(filled + spread * noise, method, clustering)
        scores.append(adjusted_rand_index(noisy, labels))
    return float(np.median(scores))


def mean_values(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The mean loss and metric per (subset_id, task) of fine-tunings of the same subsets
    (subset_values tables), in the first table's row order."""
    if len(tables) == 1:
        return tables[0]
    keys = ["subset_id", "task"]
    means = pd.concat(tables).groupby(keys)[["loss", "metric"]].mean().reset_index()
    return tables[0].drop(columns=["loss", "metric"]).merge(means, on=keys, how="left")


def load_data(config: dict):
    examples, tasks = generate_planted(planted_spec(config["dataset"]["planted"]))
    return build_task_data(examples, tasks), tasks


def one_epoch_seconds(config, data, meta, clock=time.perf_counter) -> float:
    """One epoch of training on all tasks' training examples, from the meta-initialization,
    timed by ``clock`` (wall time by default; time.process_time for CPU time)."""
    return timed(lambda: _one_epoch(config, data, meta), clock)


def _one_epoch(config, data, meta) -> None:
    model = copy.deepcopy(meta)
    settings = training(config["meta_init"])
    one = TrainSettings(1, settings.lr, settings.batch_size, settings.weight_decay)
    fit(model, data, torch.arange(data.n_tasks), one, seed=0)


def timed(work, clock=time.perf_counter) -> float:
    started = clock()
    work()
    return clock() - started


def median_seconds(work, repeats: int):
    """The median wall and CPU seconds of ``repeats`` calls of ``work``, and its last
    result."""
    return interleaved_medians([work], repeats)[0]


def interleaved_medians(works, repeats: int) -> list[tuple[float, float, object]]:
    """:func:`median_seconds` of each of ``works``, called in turn ``repeats`` times, so
    that a change in the load of a shared machine reaches all of them alike (their ratios
    are then measured in one run)."""
    wall, cpu = [[] for _ in works], [[] for _ in works]
    results = [None] * len(works)
    for _ in range(repeats):
        for index, work in enumerate(works):
            started, cpu_started = time.perf_counter(), time.process_time()
            results[index] = work()
            wall[index].append(time.perf_counter() - started)
            cpu[index].append(time.process_time() - cpu_started)
    return [(float(np.median(w)), float(np.median(c)), result)
            for w, c, result in zip(wall, cpu, results)]


def _gradient_child(config, hidden, state, subsets, text, l2_values, flow_steps, tolerances,
                    repeats, queue):
    """Projection of every train/val example, then the estimate of every subset at each l2
    of ``l2_values``, each count of ``flow_steps`` and each curvature tolerance of
    ``tolerances`` (the library's projection and valuer,
    as the stages call them, without the Parquet round trip), after a warm-up on 2
    subsets; each timed ``repeats`` times (the median)."""
    torch.set_num_threads(1)
    data, _ = load_data(config)
    meta = MultiHeadNet(data.n_features, data.n_tasks, hidden)
    meta.load_state_dict(state)
    text, _, step_scale = text.partition("/")
    name, at, preconditioner = text.partition("@")
    unprojected = name == "unprojected"
    # svd: the exact projector's full gradients, then their top right singular vectors
    svd_dim = int(name.split(":")[1]) if name.startswith("svd:") else None
    settings = projection_settings(
        "exact" + at + preconditioner if unprojected or svd_dim else text, config
    )
    # unscaled: the task scales are fitted on held-out real fine-tunings, which this
    # benchmark compares against instead
    estimate = dataclasses.replace(
        GradientEstimateSettings.from_mapping(config["gradient_estimate"]), task_scales="none"
    ).with_l2(l2_values[0])
    if step_scale:
        estimate = dataclasses.replace(estimate, step_scale=step_scale)
    if unprojected and estimate.step_scale != "fixed":
        raise ValueError(f"{text}: the unprojected estimate has step_scale fixed only")
    metric = config["evaluation"]["metric"]
    # Without the reset, the peak of generating the data (above the estimator's) would hide
    # the estimator's: it printed 0 MB.
    footprint = start_peak()
    if not (unprojected or svd_dim):
        warm = make_projector(meta, settings)
        splits = project_data(meta, warm, data, PROJECTION_BATCH)
        gradient_valuer(splits, warm, warm.parameter_norm(meta), data.task_names, data.types,
                        estimate, metric, memory_mb=BATCH_MB)(subsets[subsets["subset_id"] < 2])
        del splits
    # the first epoch in this process pays one-time costs (25 times a later one's): with
    # --repeats 1 it would be the epoch the projection is measured in
    _one_epoch(config, data, meta)
    def project():
        projector = make_projector(meta, settings)
        splits = project_data(meta, projector, data, PROJECTION_BATCH)
        if svd_dim:
            return OrthonormalColumns(projector, svd_dim), singular_basis(splits, svd_dim)
        return projector, splits

    (projection_seconds, projection_cpu, (projector, splits)), (epoch, epoch_cpu, _) = (
        interleaved_medians([project, lambda: _one_epoch(config, data, meta)], repeats)
    )
    values, seconds, cpu_seconds = {}, {}, {}
    metric_names = resolve_metrics(metric, data.types, data.task_names)
    # the unprojected estimate has no compressed curvature: one tolerance for it
    applied = tolerances[:1] if unprojected else tolerances
    for steps, tolerance, l2 in itertools.product(flow_steps, applied, l2_values):
        key = steps, tolerance, l2
        if unprojected:
            def run():
                return unprojected_values(splits, subsets, data.task_names, metric_names,
                                          l2, steps)
        else:
            value = gradient_valuer(
                splits, projector, projector.parameter_norm(meta), data.task_names,
                data.types, dataclasses.replace(estimate, l2=l2, flow_steps=steps,
                                                curvature_tolerance=tolerance),
                metric, memory_mb=BATCH_MB,
            )

            def run():
                return value(subsets).drop(columns="relative_shift")
        # each l2 its own time: a larger l2 keeps fewer curvature directions and runs faster
        seconds[key], cpu_seconds[key], values[key] = median_seconds(run, repeats)
    queue.put({
        "values": values, "dim": projector.dim,
        "exact": projector.exact, "projection_seconds": projection_seconds,
        "projection_cpu": projection_cpu, "epoch_seconds": epoch, "epoch_cpu": epoch_cpu,
        "estimate_seconds": seconds, "estimate_cpu": cpu_seconds,
        "peak_mb": peak_since(footprint),
    })


def gradient_run(config, hidden, meta, subsets, text, l2_values, flow_steps, tolerances,
                 repeats):
    """One projection setting in a fresh process, so its peak memory is its own."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=_gradient_child,
        args=(config, hidden, meta.state_dict(), subsets, text, l2_values, flow_steps,
              tolerances, repeats, queue),
    )
    process.start()
    result = queue.get()
    process.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--hidden", type=int, nargs="+", default=None)
    parser.add_argument("--subsets", type=int, default=600)
    parser.add_argument("--l2", type=float, nargs="+", default=None,
                        help="gradient_estimate.l2 values to compare (default: the config's l2, or "
                             "its l2_candidates when l2 is auto)")
    parser.add_argument("--flow-steps", type=int, nargs="+", default=None,
                        help="gradient_estimate.flow_steps values to compare (default: the "
                             "config's)")
    parser.add_argument("--curvature-tolerance", type=float, nargs="+", default=None,
                        help="gradient_estimate.curvature_tolerance values to compare "
                             "(default: the config's)")
    parser.add_argument("--meta-epoch", choices=("best", "last"), default=None,
                        help="keep the meta-initialization's epoch of lowest validation loss "
                             "or its last (default: the config's meta_init.keep_best_epoch)")
    parser.add_argument("--finetune-lr", type=float, default=None,
                        help="finetune.lr of the references (default: the config's, chosen as "
                             "the workflow does when it is auto)")
    parser.add_argument("--task-scales", action="store_true",
                        help="also print each estimate with its task scales, fitted as the "
                             "workflow fits them: on the first validation.n_subsets subsets "
                             "against the second reference (the second seed's fine-tuning)")
    parser.add_argument("--noise-draws", type=int, default=0,
                        help="also print, for each row, the median ARI over this many draws "
                             "of the reference's affinity plus noise of the row's affinity "
                             "correlation (0: not computed; each draw is one clustering)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="times each of the training epoch, the projection and every "
                             "estimate is timed (the median is printed)")
    parser.add_argument("--reference-seeds", type=int, default=1,
                        help="the reference (and the floor's second reference) is the mean of "
                             "this many fine-tunings of each subset, with consecutive seeds")
    parser.add_argument("--settings", nargs="+",
                        default=["exact", "sparse:1024:4", "kronecker:1024", "dense:1024"])
    args = parser.parse_args()
    if args.reference_seeds < 1:
        parser.error(f"--reference-seeds must be at least 1, not {args.reference_seeds}")
    config = validated_config(args.config)
    hidden = args.hidden or config["model"]["hidden_sizes"]
    best_epoch = (
        config["meta_init"]["keep_best_epoch"] if args.meta_epoch is None
        else args.meta_epoch == "best"
    )
    torch.set_num_threads(1)
    data, _ = load_data(config)
    meta = train_new_model(data, torch.arange(data.n_tasks), hidden,
                           training(config["meta_init"], best_epoch),
                           config["meta_init"]["seed"],
                           torch.device("cpu"))
    n_parameters = sum(p.numel() for p in meta.parameters())
    subsets = random_design(data.task_names, config["subsets"]["size"], args.subsets,
                            config["subsets"]["seed"])
    metric = config["evaluation"]["metric"]
    epoch, epoch_cpu, _ = median_seconds(lambda: _one_epoch(config, data, meta), args.repeats)
    finetune = FinetuneSettings.from_mapping(config["finetune"])
    if args.finetune_lr is not None:
        finetune = finetune.with_lr(args.finetune_lr)
    elif finetune.lr_is_auto:
        pilot = subsets[subsets["subset_id"].isin(
            sorted(subsets["subset_id"].unique())[: config["validation"]["n_subsets"]]
        )]
        started = time.perf_counter()
        curve = lr_curve_on(meta, data, pilot, finetune, config["evaluation"]["metric"])
        finetune = finetune.with_lr(float(curve.loc[curve["chosen"], "lr"].iloc[0]))
        print(f"finetune.lr auto, on {pilot['subset_id'].nunique()} of the subsets "
              f"({time.perf_counter() - started:.1f} s):")
        print(curve.round(4).to_string(index=False), "\n")
    def fine_tuned(offset: int) -> pd.DataFrame:
        settings = dataclasses.replace(finetune, seed=finetune.seed + offset)
        return finetune_valuer(meta, data, settings, metric)(subsets)

    real_seconds, real_cpu, first = median_seconds(lambda: fine_tuned(0), 1)
    tables = [first] + [fine_tuned(offset) for offset in range(1, 2 * args.reference_seeds)]
    real = mean_values(tables[: args.reference_seeds])
    other = mean_values(tables[args.reference_seeds :])
    base = meta_validation_loss(meta, data, metric)
    trivial = real.copy()
    trivial["loss"] = base.loc[trivial["task"]].to_numpy()
    clustering = ClusteringSettings(**{
        key: config["clustering"][key]
        for key in ("similarity", "rounding", "n_clusters", "max_clusters", "seed")
    })
    method = config["clustering"]["methods"][0]
    names = data.task_names

    clusters_of_real = reference_clusters(real, names, clustering, method)

    real_affinity = square(affinity_table(real, names), names, "normalized")
    same_count = dataclasses.replace(clustering, n_clusters=clusters_of_real.n_clusters)

    def compare(values):
        figures = agreement(values, real, base, names, clustering, method, clusters_of_real)
        correlation = off_diagonal_correlation(
            square(affinity_table(values, names), names, "normalized"), real_affinity
        )
        figures["affinity_corr"] = correlation
        if args.noise_draws:
            figures["ari_same_corr"] = noise_matched_ari(
                real_affinity, clusters_of_real.labels, correlation, method, same_count,
                args.noise_draws,
            )
        return figures

    print(f"config {args.config}: k = {data.n_tasks} tasks, trunk {hidden}, p = {n_parameters} "
          f"parameters, meta-initialization {'best' if best_epoch else 'last'} epoch, "
          f"fine-tuning {config['finetune']['epochs']} epochs at lr {finetune.training.lr:g}, "
          f"m = {args.subsets} subsets of size {config['subsets']['size']}, l2 "
          f"{config['gradient_estimate']['l2']}, clusters by {method}, 1 thread per process, "
          f"reference the mean of {args.reference_seeds} fine-tuning(s) per subset")
    print(f"one training epoch: {epoch:.3f} s ({epoch_cpu:.3f} CPU s, median of "
          f"{args.repeats}); real fine-tuning of the m subsets: {real_seconds:.1f} s "
          f"({real_cpu:.1f} CPU s)\n")
    rows = [{"what": "real vs real (floor)", **compare(other)},
            {"what": "no change vs real", **compare(trivial)}]
    # l2 "auto": every candidate, so that the row the workflow would choose is among them
    l2 = config["gradient_estimate"]["l2"]
    l2_values = args.l2 or (
        config["gradient_estimate"]["l2_candidates"] if l2 == "auto" else [l2]
    )
    flow_steps = args.flow_steps or [config["gradient_estimate"]["flow_steps"]]
    tolerances = args.curvature_tolerance or [config["gradient_estimate"]["curvature_tolerance"]]
    held_out = sorted(subsets["subset_id"].unique())[: config["validation"]["n_subsets"]]
    for text in args.settings:
        result = gradient_run(config, hidden, meta, subsets, text, l2_values, flow_steps,
                              tolerances, args.repeats)
        for (steps, tolerance, l2), values in result["values"].items():
            estimate_seconds = result["estimate_seconds"][steps, tolerance, l2]
            estimate_cpu = result["estimate_cpu"][steps, tolerance, l2]
            rows.append({
                "what": f"gradient {text}" + (" (exact)" if result["exact"] else ""),
                "flow": steps, "tol": tolerance, "l2": l2, "d": result["dim"],
                "proj_epochs": result["projection_seconds"] / result["epoch_seconds"],
                "proj_epochs_cpu": result["projection_cpu"] / result["epoch_cpu"],
                "subsets_per_s": args.subsets / estimate_seconds,
                "peak_mb": result["peak_mb"],
                "speedup": real_seconds / (result["projection_seconds"] + estimate_seconds),
                "speedup_cpu": real_cpu / (result["projection_cpu"] + estimate_cpu),
                **compare(values),
            })
            if args.task_scales:
                # as calibrate_estimate fits them: on the held-out subsets, against the
                # second reference
                held = values["subset_id"].isin(held_out)
                scales = fit_task_scales(values[held], other[other["subset_id"].isin(held_out)],
                                         base, names)
                rows.append({
                    **rows[-1], "what": rows[-1]["what"] + " + task scales",
                    **compare(scale_changes(values, scales, base)),
                })
    table = pd.DataFrame(rows).drop(columns="affinity_dist_raw")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
