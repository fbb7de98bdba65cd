"""Clustering tasks on a symmetric affinity matrix (higher = train together)."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.cluster import SpectralClustering

log = logging.getLogger(__name__)

METHODS = ("spectral",)


SIMILARITIES = ("profile", "exp")


def _exp_kernel(matrix: np.ndarray) -> np.ndarray:
    """exp(M / s), s = std of the off-diagonal entries of M, symmetrized."""
    off_diagonal = matrix[~np.eye(len(matrix), dtype=bool)]
    scale = off_diagonal.std() if off_diagonal.size and off_diagonal.std() > 0 else 1.0
    kernel = np.exp(matrix / scale)
    return (kernel + kernel.T) / 2.0


def similarity_kernel(affinity: np.ndarray, similarity: str = "profile") -> np.ndarray:
    """A nonnegative (k, k) similarity for spectral clustering of a signed affinity matrix.

    "exp": exp(A / s) on the affinity entries themselves.
    "profile": exp(C / s) where C_ij is the Pearson correlation of rows i and j of A: two
        tasks are similar when they relate alike to every other task. Each entry pools k
        noisy affinities instead of one, which recovered planted groups more reliably
        (ARI 0.91 to 1.0 against 0.63 to 0.81 for "exp" on six 30-task matrices from real
        fine-tuning with 600 subsets).
    Uncovered pairs (NaN) count as 0, the neutral value of a z-scored affinity.
    """
    filled = np.nan_to_num(affinity, nan=0.0)
    if similarity == "exp":
        return _exp_kernel(filled)
    if similarity == "profile":
        centered = filled - filled.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(centered, axis=1)
        norms = np.where(norms > 0, norms, 1.0)
        correlation = (centered @ centered.T) / np.outer(norms, norms)
        return _exp_kernel(correlation)
    raise ValueError(f"clustering.similarity = {similarity!r}; expected one of {SIMILARITIES}")


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0, 1, ... in order of their first task, so equal partitions give
    equal label vectors."""
    mapping: dict[int, int] = {}
    for label in labels:
        mapping.setdefault(int(label), len(mapping))
    return np.array([mapping[int(label)] for label in labels], dtype=np.int64)


def average_density(affinity: np.ndarray, labels: np.ndarray) -> float:
    """Sum over clusters C of v_C^T A v_C / |C| (v_C the 0/1 indicator), NaN entries as 0:
    the objective the SDP relaxation maximizes, used to compare methods on one scale."""
    filled = np.nan_to_num(affinity, nan=0.0)
    total = 0.0
    for cluster in np.unique(labels):
        members = labels == cluster
        total += filled[np.ix_(members, members)].sum() / members.sum()
    return float(total)


def cluster_tasks(
    affinity: np.ndarray, n_clusters: int, method: str, similarity: str, seed: int
) -> np.ndarray:
    """Cluster labels (k,) int64, canonically ordered, for a symmetric (k, k) affinity."""
    k = affinity.shape[0]
    if not 1 <= n_clusters <= k:
        raise ValueError(f"clustering.n_clusters = {n_clusters} must be between 1 and k = {k}")
    if method not in METHODS:
        raise ValueError(f"clustering.method = {method!r}; expected one of {METHODS}")
    kernel = similarity_kernel(affinity, similarity)
    if n_clusters == 1:
        return np.zeros(k, dtype=np.int64)
    if n_clusters == k:
        return np.arange(k, dtype=np.int64)
    model = SpectralClustering(
        n_clusters=n_clusters, affinity="precomputed", n_init=100, random_state=seed
    )
    return canonical_labels(model.fit_predict(kernel))
