import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from taskgroup.clustering import (
    average_density,
    canonical_labels,
    cluster_tasks,
    similarity_kernel,
)


def block_matrix(sizes, within=1.0, between=-0.5, noise=0.0, seed=0):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    matrix = np.where(labels[:, None] == labels[None, :], within, between)
    rng = np.random.default_rng(seed)
    jitter = rng.normal(scale=noise, size=matrix.shape)
    return matrix + (jitter + jitter.T) / 2, labels


@pytest.mark.parametrize("similarity", ["profile", "exp"])
def test_spectral_recovers_noisy_blocks(similarity):
    matrix, truth = block_matrix([4, 5, 3], noise=0.3, seed=1)
    order = np.random.default_rng(2).permutation(len(truth))
    labels = cluster_tasks(matrix[np.ix_(order, order)], 3, "spectral", similarity, seed=0)
    assert adjusted_rand_score(truth[order], labels) == 1.0


def test_labels_are_canonical_and_deterministic():
    matrix, _ = block_matrix([3, 3, 3], noise=0.1)
    first = cluster_tasks(matrix, 3, "spectral", "profile", seed=0)
    assert first.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert canonical_labels(np.array([5, 5, 2, 7, 2])).tolist() == [0, 0, 1, 2, 1]


def test_trivial_cluster_counts_and_bad_counts():
    matrix, _ = block_matrix([2, 2])
    assert cluster_tasks(matrix, 1, "spectral", "profile", 0).tolist() == [0, 0, 0, 0]
    assert cluster_tasks(matrix, 4, "spectral", "profile", 0).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="n_clusters = 5"):
        cluster_tasks(matrix, 5, "spectral", "profile", 0)


def test_similarity_is_symmetric_positive_and_tolerates_nan():
    matrix, _ = block_matrix([3, 3], noise=0.2)
    matrix[0, 4] = matrix[4, 0] = np.nan
    for similarity in ("profile", "exp"):
        kernel = similarity_kernel(matrix, similarity)
        assert np.isfinite(kernel).all() and (kernel > 0).all()
        np.testing.assert_allclose(kernel, kernel.T)


def test_average_density_by_hand():
    matrix = np.array([[1.0, 2.0, 0.0], [2.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    # clusters {0, 1} and {2}: (1 + 2 + 2 + 3) / 2 + 4 / 1
    assert average_density(matrix, np.array([0, 0, 1])) == pytest.approx(8.0)
