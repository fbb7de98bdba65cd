import numpy as np
import pytest
import torch
from conftest import small_spec
from torch.nn import functional as F

from taskgroup.data.datasets.planted import generate_planted
from taskgroup.data.examples import SplitTensors, TaskData, build_task_data
from taskgroup.estimate.affinity_sources import (
    covariance_factor,
    covariance_score,
    covariance_similarity,
    gradient_cosine_affinity,
    lookahead_matrix,
    lookahead_training,
    normalize_affinity,
)
from taskgroup.models.network import MultiHeadNet
from taskgroup.models.training import TrainSettings, train_new_model

CPU = torch.device("cpu")


@pytest.fixture
def four_tasks():
    """2 planted groups x 2 tasks: tasks 0, 1 share a teacher and covariance, as do 2, 3."""
    spec = small_spec(n_groups=2, tasks_per_group=2, n_train=80, n_features=5, seed=3)
    return build_task_data(*generate_planted(spec))


@pytest.fixture
def teacher_tasks():
    """4 tasks on isotropic inputs: tasks 0, 1 have (nearly) the same linear teacher, tasks
    2, 3 another one orthogonal to it."""
    generator = torch.Generator().manual_seed(0)
    teachers = torch.tensor([[1.0, 0, 0, 0], [1, 0.2, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0.2]])
    splits = {}
    for split in ("train", "val", "test"):
        features = torch.randn(240, 4, generator=generator)
        task_index = torch.arange(4).repeat_interleave(60)
        labels = ((features * teachers[task_index]).sum(1) > 0).float()
        splits[split] = SplitTensors(features, labels, task_index)
    return TaskData([f"task_{i}" for i in range(4)], splits)


def task_loss(model, split, task):
    keep = split.task_index == task
    logits = model(split.features[keep], split.task_index[keep])
    return F.binary_cross_entropy_with_logits(logits, split.labels[keep])


# ---------------------------------------------------------------- gradient cosine


def test_gradient_cosine_equals_per_task_autograd(small_data):
    torch.manual_seed(1)
    model = MultiHeadNet(small_data.n_features, small_data.n_tasks, [4, 3])
    cosine = gradient_cosine_affinity(model, small_data, "val")
    split = small_data.splits["val"]
    trunk = list(model.trunk.parameters())
    rows = []
    for task in range(small_data.n_tasks):
        grads = torch.autograd.grad(task_loss(model, split, task), trunk)
        rows.append(torch.cat([g.flatten() for g in grads]).double())
    g = torch.stack(rows)
    expected = (g @ g.T / torch.outer(g.norm(dim=1), g.norm(dim=1))).numpy()
    assert cosine.dtype == np.float64 and cosine.shape == (9, 9)
    np.testing.assert_allclose(cosine, expected, atol=1e-6)
    np.testing.assert_allclose(cosine, cosine.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(cosine), 1.0)


def test_gradient_cosine_needs_a_trunk(small_data):
    model = MultiHeadNet(small_data.n_features, small_data.n_tasks, [])
    with pytest.raises(ValueError, match="no shared trunk"):
        gradient_cosine_affinity(model, small_data)


# ---------------------------------------------------------------- TAG lookahead


def test_one_step_lookahead_equals_hand_computation(four_tasks):
    n_train = four_tasks.splits["train"].labels.shape[0]
    settings = TrainSettings(epochs=1, lr=0.05, batch_size=n_train)  # exactly one step
    run = lookahead_training(four_tasks, [3], settings, seed=7, device=CPU, lookahead_lr=0.3)
    assert run.n_recorded == 1
    np.testing.assert_array_equal(run.counts, np.ones((4, 4)))

    torch.manual_seed(7)  # the initialization lookahead_training starts from
    initial = MultiHeadNet(four_tasks.n_features, 4, [3])
    split = four_tasks.splits["train"]
    expected = np.zeros((4, 4))
    for i in range(4):
        stepped = MultiHeadNet(four_tasks.n_features, 4, [3])
        stepped.load_state_dict(initial.state_dict())
        grads = torch.autograd.grad(task_loss(initial, split, i), list(initial.trunk.parameters()))
        with torch.no_grad():
            for parameter, gradient in zip(stepped.trunk.parameters(), grads):
                parameter -= 0.3 * gradient
            for j in range(4):
                before = task_loss(initial, split, j)
                expected[i, j] = 1.0 - float(task_loss(stepped, split, j) / before)
    # float32 losses: 1 - ratio carries absolute rounding of ~1e-7
    np.testing.assert_allclose(run.affinity, expected, rtol=1e-4, atol=2e-6)
    assert np.abs(expected).max() > 1e-3


def test_lookahead_trains_the_same_model_as_train_new_model(four_tasks):
    settings = TrainSettings(epochs=3, lr=0.02, batch_size=32, select_best_epoch=True)
    run = lookahead_training(four_tasks, [3], settings, seed=2, device=CPU, every=3)
    reference = train_new_model(four_tasks, torch.arange(4), [3], settings, 2, CPU)
    for name, value in reference.state_dict().items():
        assert torch.equal(value, run.model.state_dict()[name]), name
    steps = 3 * -(-four_tasks.splits["train"].labels.shape[0] // 32)
    assert run.n_recorded == -(-steps // 3)


def test_same_teacher_tasks_have_higher_lookahead(teacher_tasks):
    settings = TrainSettings(epochs=40, lr=0.05, batch_size=240)  # full batch: no sampling noise
    z = lookahead_matrix(teacher_tasks, [2], settings, 0, CPU, every=1, lookahead_lr=0.1)
    assert z.shape == (4, 4) and z.dtype == np.float64 and np.isfinite(z).all()
    same = [z[0, 1], z[1, 0], z[2, 3], z[3, 2]]
    cross = [z[i, j] for i in (0, 1) for j in (2, 3)] + [z[j, i] for i in (0, 1) for j in (2, 3)]
    assert min(same) > 0 > max(cross)


# ---------------------------------------------------------------- covariance similarity


def rotation(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q


def test_covariance_score_identical_rotated_orthogonal():
    rng = np.random.default_rng(0)
    d = 6
    x = rng.standard_normal((200, d)) * np.array([3.0, 2.0, 1.0, 0.3, 0.1, 0.05])
    fx = covariance_factor(x)
    # "self": identical covariances (up to scale) score exactly 1, the maximum.
    assert covariance_score(fx, covariance_factor(2.5 * x), "self") == pytest.approx(1.0)
    rotated = covariance_factor(x @ rotation(d, 1).T)
    assert covariance_score(fx, rotated, "self") < 0.9
    # "paper" (eq. 6): 1 for identical rank-one covariances; bounded by 1 otherwise.
    v = rng.standard_normal((50, 1)) @ rng.standard_normal((1, d))
    assert covariance_score(covariance_factor(v), covariance_factor(-3 * v)) == pytest.approx(1.0)
    paper_same = covariance_score(fx, fx)
    lam = np.linalg.svd(x, compute_uv=False) ** 2
    lam = lam[: fx.shape[1]]
    assert paper_same == pytest.approx(np.linalg.norm(lam) / lam.sum())
    assert covariance_score(fx, rotated) < paper_same
    # both are invariant to one rotation applied to both tasks and symmetric
    q = rotation(d, 2)
    y = rng.standard_normal((150, d)) * np.array([1.0, 3.0, 0.2, 2.0, 0.5, 1.0])
    fy = covariance_factor(y)
    for normalization in ("paper", "self"):
        score = covariance_score(fx, fy, normalization)
        turned = covariance_score(
            covariance_factor(x @ q.T), covariance_factor(y @ q.T), normalization
        )
        assert turned == pytest.approx(score)
        assert covariance_score(fy, fx, normalization) == pytest.approx(score)
    # covariances on orthogonal subspaces score 0
    a = np.zeros((30, d))
    a[:, :2] = rng.standard_normal((30, 2))
    b = np.zeros((30, d))
    b[:, 3:] = rng.standard_normal((30, 3))
    assert covariance_score(covariance_factor(a), covariance_factor(b)) == pytest.approx(0.0)


def test_covariance_factor_rank_deficient_and_empty():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 10))  # fewer examples than features
    factor = covariance_factor(x, energy=1.0)
    assert factor.shape == (10, 3)
    np.testing.assert_allclose(factor @ factor.T, x.T @ x, atol=1e-10)
    assert covariance_factor(np.zeros((0, 4))).shape == (4, 0)
    assert covariance_factor(np.zeros((5, 4))).shape == (4, 0)
    assert np.isnan(covariance_score(covariance_factor(np.zeros((0, 4))), factor[:4]))


def test_covariance_similarity_matrix_finds_planted_groups(four_tasks):
    for normalization in ("paper", "self"):
        scores = covariance_similarity(four_tasks, normalization=normalization)
        assert scores.shape == (4, 4) and scores.dtype == np.float64
        np.testing.assert_allclose(scores, scores.T)
        assert ((scores >= 0) & (scores <= 1)).all()
        assert min(scores[0, 1], scores[2, 3]) > max(scores[:2, 2:].ravel())
    np.testing.assert_allclose(np.diag(covariance_similarity(four_tasks, normalization="self")), 1)
    torch.manual_seed(0)
    model = MultiHeadNet(four_tasks.n_features, 4, [3])
    trunk_scores = covariance_similarity(four_tasks, model=model)
    np.testing.assert_allclose(trunk_scores, trunk_scores.T)


# ---------------------------------------------------------------- normalization


def test_normalize_affinity():
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((7, 7)) * 3 + 5
    out = normalize_affinity(matrix)
    off = ~np.eye(7, dtype=bool)
    np.testing.assert_allclose(out, out.T)
    np.testing.assert_array_equal(np.diag(out), 0.0)
    assert out[off].mean() == pytest.approx(0.0, abs=1e-12)
    assert out[off].std() == pytest.approx(1.0)
    symmetric = (matrix + matrix.T) / 2
    assert np.corrcoef(out[off], symmetric[off])[0, 1] == pytest.approx(1.0)
    np.testing.assert_array_equal(normalize_affinity(np.ones((3, 3))), np.zeros((3, 3)))
