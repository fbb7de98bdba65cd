"""Cheap task-affinity baselines to compare the subset-based estimators against.

Every function returns a (k, k) float64 numpy matrix in the canonical task order of
``data.task_names``, with the convention HIGHER = more compatible: entry [i, j] says how much
task j (column) gains from task i (row). NaN marks a pair the data cannot score.

- :func:`lookahead_matrix`: TAG (Fifty et al., NeurIPS'21) inter-task lookahead
  Z[i, j] = 1 - L_j(theta'_i) / L_j(theta), theta'_i = theta with the shared trunk moved by one
  SGD step on task i's minibatch loss; averaged over the recorded steps of one training run on
  all tasks. Dimensionless (relative loss reduction); asymmetric; diagonal = a task's own
  lookahead gain (kept).
- :func:`gradient_cosine_affinity`: cosine of the angle between task i's and task j's
  mean-loss gradients with respect to the shared trunk at a given model (the
  meta-initialization). Dimensionless in [-1, 1]; symmetric; diagonal 1.
- :func:`covariance_similarity`: the covariance similarity score of Wu, Zhang and Re
  (ICLR'20, "Understanding and Improving Information Transfer in Multi-Task Learning",
  eq. 6) between the tasks' input (or trunk-feature) second-moment matrices. Dimensionless in
  [0, 1]; symmetric.

:func:`normalize_affinity` puts any of them on the scale the clustering expects: symmetric,
off-diagonal entries z-scored, diagonal 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, jacrev, vmap
from torch.nn import functional as F

from taskgroup.data.examples import SplitTensors, TaskData
from taskgroup.models.metrics import example_losses
from taskgroup.models.network import MultiHeadNet
from taskgroup.models.training import TrainSettings, train_new_model

log = logging.getLogger(__name__)

NORMALIZATIONS = ("paper", "self")


# --------------------------------------------------------------------------------------------
# shared pieces: per-task mean losses as a function of the trunk parameters


def _trunk_parameters(model: MultiHeadNet) -> dict[str, torch.Tensor]:
    """The shared trunk's parameters (names relative to ``model.trunk``), detached."""
    params = {name: value.detach() for name, value in model.trunk.named_parameters()}
    if not params:
        raise ValueError(
            "the model has no shared trunk parameters (hidden_sizes is empty): "
            "trunk-based affinities are undefined"
        )
    return params


def _one_hot(task_index: torch.Tensor, n_tasks: int) -> torch.Tensor:
    return F.one_hot(task_index, n_tasks).to(torch.float32)


def _task_mean_losses(
    model: MultiHeadNet,
    trunk_params: dict[str, torch.Tensor],
    features: torch.Tensor,
    labels: torch.Tensor,
    task_index: torch.Tensor,
    membership: torch.Tensor,
    counts: torch.Tensor,
    regression: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean loss (BCE in nats, squared error for regression examples: see
    :func:`taskgroup.models.metrics.example_losses`) of each task's examples, (k,), with the trunk
    replaced by
    ``trunk_params`` and the heads of ``model``. Tasks without examples get 0.

    Written without in-place ops so it can be differentiated and vmapped over parameters.
    ``membership`` is the (n, k) one-hot of ``task_index``, ``counts`` its column sums (or
    the (n, p) one-hot of the examples' positions among p tasks, for those p tasks' losses).
    """
    hidden = functional_call(model.trunk, trunk_params, (features,))
    logits = (hidden * model.head_weight[task_index].detach()).sum(-1) + model.head_bias[
        task_index
    ].detach()
    losses = example_losses(logits, labels, regression)
    return (losses @ membership) / counts.clamp(min=1)


# --------------------------------------------------------------------------------------------
# 1. TAG lookahead


@dataclass
class LookaheadRun:
    """Result of :func:`lookahead_training`.

    affinity: (k, k) mean of Z[i, j] = 1 - L_j(theta'_i) / L_j(theta) over the recorded steps
        at which both tasks had examples in the minibatch; NaN where that never happened.
    counts: (k, k) int64, the number of recorded steps averaged into each entry.
    n_recorded: recorded steps (every ``every``-th optimizer step, the first one included).
    model: the trained network, identical to ``train_new_model`` with the same arguments.
    """

    affinity: np.ndarray
    counts: np.ndarray
    n_recorded: int
    model: MultiHeadNet


def _lookahead_step(
    model: MultiHeadNet, batch: SplitTensors, n_tasks: int, lookahead_lr: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z (k, k) on one minibatch and the (k, k) mask of its valid entries (both tasks
    present in it, the target's loss positive); 0 elsewhere.

    Row i: the trunk after theta - lr * grad_trunk L_i(theta); column j: 1 - L_j(that) / L_j.
    The p tasks present in the minibatch (at most its size, whatever k) at once: one
    jacobian of their p mean losses (vmapped vector-Jacobian products), then one vmapped
    forward pass over the p stepped trunks, so a recording costs the same at any k.
    """
    params = _trunk_parameters(model)
    present, local = torch.unique(batch.task_index, return_inverse=True)
    membership = _one_hot(local, len(present))
    counts = membership.sum(0)
    args = (batch.features, batch.labels, batch.task_index, membership, counts,
            batch.regression)

    def losses_of(trunk):
        return _task_mean_losses(model, trunk, *args)

    with torch.no_grad():
        base = losses_of(params)
    jacobian = jacrev(losses_of)(params)  # name -> (p, *shape): row i = grad of L_i
    stepped = {name: params[name] - lookahead_lr * jacobian[name] for name in params}
    with torch.no_grad():
        after = vmap(losses_of)(stepped)  # (p sources, p targets)
    gain = 1.0 - after / torch.where(base > 0, base, torch.ones_like(base))
    valid = (base > 0)[None, :].expand_as(gain)
    full_gain = torch.zeros(n_tasks, n_tasks, dtype=gain.dtype, device=gain.device)
    full_valid = torch.zeros(n_tasks, n_tasks, dtype=torch.bool, device=gain.device)
    rows, columns = present[:, None], present[None, :]
    full_gain[rows, columns] = torch.where(valid, gain, torch.zeros_like(gain))
    full_valid[rows, columns] = valid
    return full_gain, full_valid


def lookahead_training(
    data: TaskData,
    hidden_sizes: list[int],
    settings: TrainSettings,
    seed: int,
    device: torch.device,
    every: int = 10,
    lookahead_lr: float | None = None,
) -> LookaheadRun:
    """Train a fresh network on all tasks with ``train_new_model`` (same seeding, Adam,
    shuffled minibatches, optional best-epoch selection) and record TAG lookaheads.

    Every ``every`` optimizer steps (steps 0, every, 2 every, ...; counted over the whole run),
    before the step, and for every task i present in the minibatch: take an SGD step of size
    ``lookahead_lr`` (default ``settings.lr``) on the shared trunk parameters only (heads
    fixed) along the gradient of task i's mean minibatch loss, and record for every task j
    present Z[i, j] = 1 - L_j(theta'_i) / L_j(theta), both losses the mean loss (BCE or
    squared error, by task type) of task j's examples in the same minibatch. The recorded Z
    are averaged per pair. The lookahead touches neither the parameters nor any random
    generator, so the trained model equals ``train_new_model`` without it.

    Each example here belongs to one task, so a minibatch of b examples holds about b / k
    of each task; pairs missing from a minibatch skip that step (see ``counts``).
    """
    if every < 1:
        raise ValueError(f"every = {every} must be >= 1")
    step_size = settings.lr if lookahead_lr is None else float(lookahead_lr)
    n_tasks = data.n_tasks
    data = data.to(device)
    n_examples = data.splits["train"].labels.shape[0]
    steps_per_epoch = -(-n_examples // settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    log.info(
        "TAG lookahead: %d tasks, %d examples, %d epochs x %d steps, recording every %d "
        "(%d recordings), lookahead lr %g",
        n_tasks, n_examples, settings.epochs, steps_per_epoch, every,
        -(-total_steps // every), step_size,
    )
    total = torch.zeros(n_tasks, n_tasks, dtype=torch.float64, device=device)
    counts = torch.zeros(n_tasks, n_tasks, dtype=torch.int64, device=device)
    recorded = [0]
    report_every = max(total_steps // 5, 1)

    def record(step: int, model: MultiHeadNet, minibatch: SplitTensors) -> None:
        if step % every == 0:
            _trunk_parameters(model)  # fail early without a trunk
            gain, valid = _lookahead_step(model, minibatch, n_tasks, step_size)
            total.add_(gain.to(torch.float64))
            counts.add_(valid.to(torch.int64))
            recorded[0] += 1
        if (step + 1) % report_every == 0:
            log.info("TAG lookahead: step %d/%d, %d recordings", step + 1, total_steps,
                     recorded[0])

    all_tasks = torch.arange(n_tasks, device=device)
    model = train_new_model(
        data, all_tasks, hidden_sizes, settings, seed, device, before_step=record
    )
    counts_np = counts.cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        affinity = np.where(counts_np > 0, total.cpu().numpy() / counts_np, np.nan)
    return LookaheadRun(affinity, counts_np, recorded[0], model)


def lookahead_matrix(
    data: TaskData,
    hidden_sizes: list[int],
    settings: TrainSettings,
    seed: int,
    device: torch.device,
    every: int = 10,
    lookahead_lr: float | None = None,
) -> np.ndarray:
    """TAG inter-task affinity (k, k): [i, j] = mean over recorded steps of
    1 - L_j(theta'_i) / L_j(theta), theta'_i = one SGD step of the shared trunk on task i.

    Higher = a step for task i (row) lowers task j's (column) loss more. Dimensionless
    (fraction of task j's minibatch loss removed); negative = the step hurts j; the diagonal is
    each task's own lookahead gain. See :func:`lookahead_training` for the exact procedure
    and for the trained model and per-pair counts.
    """
    return lookahead_training(
        data, hidden_sizes, settings, seed, device, every=every, lookahead_lr=lookahead_lr
    ).affinity


# --------------------------------------------------------------------------------------------
# 2. gradient cosine at a fixed model


def task_trunk_gradients(model: MultiHeadNet, split: SplitTensors, n_tasks: int) -> torch.Tensor:
    """(k, P) float64: row i = gradient of task i's mean loss (BCE, nats, over its examples
    in ``split``) with respect to the flattened shared trunk parameters; eval mode. Rows of
    tasks without examples are 0."""
    model.eval()
    params = _trunk_parameters(model)
    membership = _one_hot(split.task_index, n_tasks)
    counts = membership.sum(0)
    args = (split.features, split.labels, split.task_index, membership, counts,
            split.regression)
    jacobian = jacrev(lambda trunk: _task_mean_losses(model, trunk, *args))(params)
    return torch.cat([jacobian[name].reshape(n_tasks, -1) for name in params], dim=1).double()


def gradient_cosine_affinity(
    model: MultiHeadNet, data: TaskData, split: str = "train"
) -> np.ndarray:
    """Cosine similarity (k, k) of the tasks' mean-loss gradients on the shared trunk.

    [i, j] = <g_i, g_j> / (|g_i| |g_j|), g_i = d(mean BCE of task i on ``split``)/d(trunk
    parameters) at ``model`` (heads fixed, not part of g). Symmetric, in [-1, 1], diagonal 1;
    higher = a step that lowers task i's loss also lowers task j's (to first order). NaN for
    tasks without examples or with a zero gradient.
    """
    device = next(model.parameters()).device
    gradients = task_trunk_gradients(model, data.splits[split].to(device), data.n_tasks)
    norms = gradients.norm(dim=1)
    unit = gradients / torch.where(norms > 0, norms, torch.ones_like(norms))[:, None]
    cosine = (unit @ unit.T).clamp(-1.0, 1.0).cpu().numpy()
    ok = (norms > 0).cpu().numpy()
    cosine[~ok, :] = np.nan
    cosine[:, ~ok] = np.nan
    np.fill_diagonal(cosine, np.where(ok, 1.0, np.nan))
    return cosine


# --------------------------------------------------------------------------------------------
# 3. covariance similarity score (Wu, Zhang and Re, ICLR'20, eq. 6)


def covariance_factor(x: np.ndarray, energy: float = 0.99, center: bool = False) -> np.ndarray:
    """F = U_r D_r^{1/2} (d, r) with U_r D_r U_r^T the best rank-r approximation of X^T X and
    r the fewest leading eigenvalues whose sum reaches ``energy`` of the total.

    Computed from the SVD of X (n, d) itself, X = V S W^T, so X^T X = W S^2 W^T: F = W_r S_r.
    This is exact when n < d (rank-deficient X^T X) and never forms the squared matrix. An
    empty or all-zero X gives a (d, 0) factor.
    """
    x = np.asarray(x, dtype=np.float64)
    if center and x.shape[0] > 0:
        x = x - x.mean(axis=0, keepdims=True)
    if x.shape[0] == 0:
        return np.zeros((x.shape[1], 0))
    _, singular, right = np.linalg.svd(x, full_matrices=False)
    eigenvalues = singular**2
    total = eigenvalues.sum()
    if total <= 0:
        return np.zeros((x.shape[1], 0))
    cumulative = np.cumsum(eigenvalues) / total
    rank = int(np.searchsorted(cumulative, energy - 1e-12) + 1)
    rank = min(rank, int((eigenvalues > eigenvalues[0] * 1e-12).sum()))
    return right[:rank].T * singular[:rank]


def covariance_score(
    factor_1: np.ndarray, factor_2: np.ndarray, normalization: str = "paper"
) -> float:
    """Covariance similarity of two factors F_1 = U_1 D_1^{1/2}, F_2 = U_2 D_2^{1/2}.

    "paper" (eq. 6): |F_1^T F_2|_F / (|F_1|_F |F_2|_F) = sqrt(tr(C_1 C_2) / (tr C_1 tr C_2)),
        C = F F^T the truncated second-moment matrix. In [0, 1]; 1 only when both are the same
        rank-one matrix (up to scale): for identical C it is |eigenvalues|_2 / |eigenvalues|_1.
    "self": |F_1^T F_2|_F / sqrt(|F_1^T F_1|_F |F_2^T F_2|_F)
        = sqrt(tr(C_1 C_2) / (|C_1|_F |C_2|_F)), the square root of the cosine between C_1 and
        C_2 as vectors: in [0, 1] and exactly 1 for identical C (up to scale), any rank.
    Both are invariant to scaling either matrix and to one rotation applied to both.
    NaN when either factor is empty.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization = {normalization!r}; expected one of {NORMALIZATIONS}")
    if factor_1.shape[1] == 0 or factor_2.shape[1] == 0:
        return float("nan")
    cross = np.linalg.norm(factor_1.T @ factor_2)
    if normalization == "paper":
        scale = np.linalg.norm(factor_1) * np.linalg.norm(factor_2)
    else:
        scale = np.sqrt(
            np.linalg.norm(factor_1.T @ factor_1) * np.linalg.norm(factor_2.T @ factor_2)
        )
    return float(min(cross / scale, 1.0))


def covariance_similarity(
    data: TaskData,
    split: str = "train",
    model: MultiHeadNet | None = None,
    energy: float = 0.99,
    normalization: str = "paper",
    center: bool = False,
) -> np.ndarray:
    """Covariance similarity score (k, k) between the tasks' examples (ICLR'20 eq. 6).

    For task i, X_i (m_i, d) holds its examples of ``split``: the raw input features by default,
    which is what the paper uses (X_i is the input of the shared module B; in its experiments
    the single-task model's embedding fed to the shared LSTM), or, with ``model``, the shared
    trunk's output at that model (eval mode; the feature covariance of e.g. the
    meta-initialization). The covariance is the uncentered X_i^T X_i as in the paper
    (``center=True`` subtracts the task mean first), truncated to the fewest eigen-directions
    holding ``energy`` (0.99) of its trace; the score is :func:`covariance_score` with
    ``normalization``. Symmetric, in [0, 1], higher = more aligned covariances; dimensionless.
    The diagonal is 1 with "self" and |lambda|_2/|lambda|_1 <= 1 with "paper". NaN for tasks
    without examples. Few examples (m_i < d) are handled exactly via the SVD of X_i.
    """
    split_tensors = data.splits[split]
    features = split_tensors.features
    if model is not None:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            features = model.trunk(features.to(device)).cpu()
    features = features.detach().cpu().double().numpy()
    task_index = split_tensors.task_index.cpu().numpy()
    factors = [
        covariance_factor(features[task_index == i], energy, center) for i in range(data.n_tasks)
    ]
    k = data.n_tasks
    scores = np.full((k, k), np.nan)
    for i in range(k):
        for j in range(i, k):
            scores[i, j] = scores[j, i] = covariance_score(factors[i], factors[j], normalization)
    return scores


# --------------------------------------------------------------------------------------------
# 4. normalization for clustering


def normalize_affinity(matrix: np.ndarray) -> np.ndarray:
    """(M + M^T) / 2 with the off-diagonal entries z-scored (mean 0, population std 1, NaN
    ignored and kept) and the diagonal set to 0: the input scale of
    ``taskgroup.group.clustering.partition``. Constant off-diagonal entries become 0."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {matrix.shape}")
    symmetric = (matrix + matrix.T) / 2.0
    off = ~np.eye(len(symmetric), dtype=bool)
    values = symmetric[off]
    finite = values[np.isfinite(values)]
    out = np.zeros_like(symmetric)
    if finite.size:
        mean, std = finite.mean(), finite.std()
        out[off] = (values - mean) / (std if std > 0 else 1.0)
    return out
