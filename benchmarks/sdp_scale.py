"""Benchmark: the clustering SDP (``taskgroup.group.clustering.solve_sdp``) by k and solver.

Usage: python benchmarks/sdp_scale.py [--clarabel 30 60 100] [--scs 30 60 100 150 300 500]
                                      [--blocks 10] [--noise 0.5] [--seed 0]

Each case is a planted block matrix: k tasks in ``--blocks`` equal blocks (k divisible by
it), affinity 1 within a block and 0 across, plus symmetric Gaussian noise of standard
deviation ``--noise``. It is solved by the named solver, rounded by k-means on the rows of
X (``round_sdp_solution``, as the workflow's default), and each case runs in a fresh
process so that the peak memory is its own.

Prints one row per case: k, solver, CPU s and wall s (solve and rounding), the process's
peak resident memory (ru_maxrss), the objective <T, X> on the matrix as given, the max
constraint violation of the returned X (``sdp_violation``; solve_sdp symmetrizes X and clips
it at 0) and the ARI of the rounded partition against the planted blocks.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import cvxpy as cp
import numpy as np
from sklearn.metrics import adjusted_rand_score

from taskgroup.group import clustering


def planted_blocks(k: int, blocks: int, noise: float, seed: int):
    """(k, k) symmetric matrix and its (k,) planted labels."""
    if k % blocks:
        raise SystemExit(f"k = {k} is not divisible by --blocks {blocks}")
    labels = np.repeat(np.arange(blocks), k // blocks)
    jitter = np.random.default_rng(seed).normal(scale=noise, size=(k, k))
    matrix = (labels[:, None] == labels[None, :]).astype(float) + (jitter + jitter.T) / 2.0
    return matrix, labels


def one_case(k: int, solver: str, blocks: int, noise: float, seed: int) -> dict:
    matrix, labels = planted_blocks(k, blocks, noise, seed)
    cpu, wall = time.process_time(), time.perf_counter()
    solution = clustering.solve_sdp(matrix, blocks, solver)
    found = clustering.round_sdp_solution(solution, matrix, blocks, "kmeans", seed)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "k": k, "solver": solver, "cpu_s": cpu, "wall_s": wall,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "objective": float(np.sum(matrix * solution)),
        "violation": clustering.sdp_violation(solution, blocks),
        "ari": adjusted_rand_score(labels, found),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clarabel", type=int, nargs="*", default=[30, 60, 100])
    parser.add_argument("--scs", type=int, nargs="*", default=[30, 60, 100, 150, 300, 500])
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", nargs=2, metavar=("K", "SOLVER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        k, solver = int(args.one[0]), args.one[1]
        print(json.dumps(one_case(k, solver, args.blocks, args.noise, args.seed)))
        return
    print(f"planted blocks: {args.blocks} equal blocks, noise {args.noise}, seed {args.seed}")
    print(f"{'k':>5} {'solver':>8} {'CPU s':>8} {'wall s':>8} {'peak GB':>8} "
          f"{'objective':>12} {'violation':>10} {'ARI':>6}")
    cases = [(k, cp.CLARABEL) for k in args.clarabel] + [(k, cp.SCS) for k in args.scs]
    for k, solver in sorted(cases):
        command = [sys.executable, __file__, "--one", str(k), solver, "--blocks",
                   str(args.blocks), "--noise", str(args.noise), "--seed", str(args.seed)]
        row = json.loads(subprocess.run(command, check=True, capture_output=True,
                                        text=True).stdout.splitlines()[-1])
        print(f"{row['k']:>5} {row['solver']:>8} {row['cpu_s']:>8.1f} {row['wall_s']:>8.1f} "
              f"{row['peak_gb']:>8.2f} {row['objective']:>12.4f} {row['violation']:>10.1e} "
              f"{row['ari']:>6.3f}", flush=True)


if __name__ == "__main__":
    main()
