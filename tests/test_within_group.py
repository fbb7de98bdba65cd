import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from snakemake.utils import validate
from torch.nn import functional as F

from taskgroup.data.examples import SplitTensors, TaskData
from taskgroup.data.tables import GROUP_RESULTS, read_table, write_table
from taskgroup.models import reweighting
from taskgroup.models.alignment import AlignmentSettings, train_alignment
from taskgroup.models.diagnostics import DIAGNOSTICS, generalization_gap, gradient_cosines
from taskgroup.models.network import AlignedNet, MultiHeadNet, load_checkpoint, save_checkpoint
from taskgroup.models.options import variant_options
from taskgroup.models.training import TrainSettings, evaluate, fit, train_new_model
from taskgroup.models.within_group import (
    TrainingOptions,
    enabled_options,
    train_with_options,
)
from taskgroup.stages.evaluate import generalization_gaps
from taskgroup.stages.train import train_group_models

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "config" / "config.schema.yaml")
CPU = torch.device("cpu")


def two_task_data(noise: float, m: int = 400, d: int = 10, seed: int = 0) -> TaskData:
    """The paper's two-task example (section 2.4): both tasks see the same inputs X and the
    same teacher theta; task 1 is clean, task 2 has its labels flipped with prob. noise."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(d)
    splits = {}
    for split in ("train", "val", "test"):
        x = rng.standard_normal((m, d)).astype(np.float32)
        clean = (x @ theta > 0).astype(np.float32)
        noisy = np.where(rng.random(m) < noise, 1 - clean, clean).astype(np.float32)
        splits[split] = SplitTensors(
            torch.from_numpy(np.concatenate([x, x])),
            torch.from_numpy(np.concatenate([clean, noisy])),
            torch.cat([torch.zeros(m, dtype=torch.int64), torch.ones(m, dtype=torch.int64)]),
        )
    return TaskData(["clean", "noisy"], splits)


def test_reweighting_gives_the_noisy_task_the_smaller_weight():
    data = two_task_data(noise=0.4)
    both = torch.tensor([0, 1])
    table = reweighting.task_weights(data, both, rank=1).set_index("task")
    assert table.loc["noisy", "weight"] < 0.5 * table.loc["clean", "weight"]
    assert table["weight"].mean() == pytest.approx(1.0)
    # Algorithm 2 directly: alpha_i = ||theta_i^T U_r|| with theta_i = centered X^T y~ / m.
    x = data.splits["train"].features[:400].double().numpy()
    theta = []
    for task in (0, 1):
        y = 2 * data.splits["train"].labels[task * 400 : (task + 1) * 400].double().numpy() - 1
        theta.append((x - x.mean(0)).T @ (y - y.mean()) / 400)
    theta = np.stack(theta, axis=1)
    u = np.linalg.svd(theta)[0][:, :1]
    alpha = np.linalg.norm(theta.T @ u, axis=1)
    np.testing.assert_allclose(table["alpha"].to_numpy(), alpha, rtol=1e-9)
    np.testing.assert_allclose(
        table["singular_value"].to_numpy(), np.linalg.svd(theta)[1], rtol=1e-9
    )
    # Without noise the two tasks weigh the same.
    clean = reweighting.task_weights(two_task_data(noise=0.0), both, rank=1)
    np.testing.assert_allclose(clean["weight"], [1.0, 1.0], atol=1e-12)


def test_unit_task_weights_train_exactly_like_no_weights(small_data):
    tasks = torch.tensor([0, 1, 3])
    settings = TrainSettings(epochs=3, lr=0.02, batch_size=16)
    models = []
    for weights in (None, torch.ones(small_data.n_tasks)):
        torch.manual_seed(1)
        model = MultiHeadNet(small_data.n_features, small_data.n_tasks, [4])
        history = fit(model, small_data, tasks, settings, seed=1, task_weights=weights)
        models.append((model, history))
    assert models[0][1] == models[1][1]
    for a, b in zip(models[0][0].parameters(), models[1][0].parameters()):
        assert torch.equal(a, b)


def test_identity_alignment_reproduces_plain_training_exactly(small_data):
    tasks = torch.tensor([0, 1, 2])
    settings = TrainSettings(epochs=4, lr=0.02, batch_size=16, select_best_epoch=True)
    plain = train_new_model(small_data, tasks, [4], settings, seed=3, device=CPU)
    # Identity matrices give bit-identical outputs ...
    aligned = AlignedNet(copy.deepcopy(plain))
    features, index = small_data.splits["test"].features, small_data.splits["test"].task_index
    with torch.no_grad():
        assert torch.equal(aligned(features, index), plain(features, index))
    # ... and bit-identical training when the matrices are not updated.
    torch.manual_seed(5)
    base = MultiHeadNet(small_data.n_features, small_data.n_tasks, [4])
    twin = AlignedNet(copy.deepcopy(base))
    twin.alignment.requires_grad_(False)
    history = fit(base, small_data, tasks, settings, seed=5)
    assert fit(twin, small_data, tasks, settings, seed=5) == history
    for a, b in zip(base.parameters(), twin.base.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(twin.alignment, torch.eye(small_data.n_features).expand_as(twin.alignment))
    # The full option with zero learning rates (alignment phase run, no updates) equals
    # plain training, parameters and evaluated losses.
    options = TrainingOptions.from_dict(
        {"alignment": {"enabled": True, "epochs": 2, "lr": 0.0, "head_lr": 0.0}}
    )
    result = train_with_options(small_data, tasks, [4], settings, 3, CPU, options)
    assert isinstance(result.model, AlignedNet)
    for a, b in zip(plain.parameters(), result.model.base.parameters()):
        assert torch.equal(a, b)
    pd.testing.assert_frame_equal(
        evaluate(plain, small_data, tasks), evaluate(result.model, small_data, tasks)
    )


def test_alignment_updates_only_heads_and_matrices_and_round_trips(small_data, tmp_path):
    tasks = torch.tensor([0, 1, 2])
    torch.manual_seed(0)
    model = AlignedNet(MultiHeadNet(small_data.n_features, small_data.n_tasks, [4]))
    trunk_before = copy.deepcopy(model.trunk.state_dict())
    heads_before = model.head_weight.detach().clone()
    history, kept = train_alignment(
        model, small_data, tasks, AlignmentSettings(epochs=3, lr=0.05, head_lr=0.05),
        batch_size=16, seed=0, select_best_epoch=False,
    )
    assert len(history) == 3 and kept == 3
    for key, value in model.trunk.state_dict().items():
        assert torch.equal(value, trunk_before[key])
    assert not torch.equal(model.head_weight, heads_before)
    eye = torch.eye(small_data.n_features)
    assert not torch.equal(model.alignment[0], eye)
    assert torch.equal(model.alignment[5], eye)  # a task outside the group: untouched
    save_checkpoint(model, small_data.task_names, tmp_path / "m.pt")
    loaded = load_checkpoint(tmp_path / "m.pt", small_data.task_names)
    assert isinstance(loaded, AlignedNet)
    assert torch.equal(loaded.alignment, model.alignment)


def test_gradient_cosine_matches_direct_autograd():
    torch.manual_seed(0)
    model = MultiHeadNet(n_features=3, n_tasks=3, hidden_sizes=[4, 3])
    n = 24
    task_index = torch.arange(n) % 3
    regression = task_index == 2
    labels = torch.where(regression, torch.randn(n), (torch.rand(n) > 0.5).float())
    split = SplitTensors(torch.randn(n, 3), labels, task_index, regression)
    chosen = torch.tensor([0, 1, 2])
    losses, cosines, norms = gradient_cosines(model, split, chosen)
    params = list(model.trunk.parameters())
    grads, direct_losses = [], []
    for task in range(3):
        rows = task_index == task
        out = model(split.features[rows], task_index[rows])
        if task == 2:
            loss = ((out - labels[rows]) ** 2).mean()
        else:
            loss = F.binary_cross_entropy_with_logits(out, labels[rows])
        direct_losses.append(loss.item())
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    total = torch.stack(grads).sum(0).double()
    for task in range(3):
        expected = F.cosine_similarity(grads[task].double(), total, dim=0).item()
        assert cosines[task] == pytest.approx(expected, abs=1e-6)
        assert norms[task] == pytest.approx(grads[task].norm().item(), rel=1e-6)
        assert losses[task] == pytest.approx(direct_losses[task], rel=1e-6)
    # One task alone: its gradient is the sum.
    _, alone, _ = gradient_cosines(model, split, torch.tensor([1]))
    assert alone[0] == pytest.approx(1.0, abs=1e-6)


def _diag(task, epochs_train_val, final):
    rows = []
    for epoch, (train, val) in epochs_train_val.items():
        for split, loss in (("train", train), ("val", val)):
            rows.append(dict(epoch=epoch, phase="joint", task=task, split=split, loss=loss,
                             grad_cosine=1.0, grad_norm=1.0))
    for split, loss in zip(("train", "val"), final[1:]):
        rows.append(dict(epoch=final[0], phase="final", task=task, split=split, loss=loss,
                         grad_cosine=1.0, grad_norm=1.0))
    return pd.DataFrame(rows)


def test_generalization_gap_at_matched_training_loss():
    mtl = _diag("a", {0: (0.7, 0.7), 10: (0.5, 0.6)}, final=(10, 0.5, 0.6))
    stl = _diag("a", {0: (0.7, 0.7), 10: (0.45, 0.5), 20: (0.2, 0.55)}, final=(10, 0.45, 0.5))
    gap = generalization_gap(mtl, stl).iloc[0]
    assert gap["stl_epoch"] == 10  # |0.45 - 0.5| is the smallest distance
    assert gap["gap"] == pytest.approx(0.1)
    assert gap["final_difference"] == pytest.approx(0.1)


def test_group_stage_writes_weights_and_diagnostics(small_tables, tmp_path):
    examples, tasks = small_tables
    write_table(examples, tmp_path / "examples.parquet")
    write_table(tasks, tmp_path / "tasks.parquet")
    members = ["task_0", "task_1", "task_2"]
    from taskgroup.group.groupings import group_key

    key = group_key(members)
    options = enabled_options(
        {"reweighting": {"enabled": True}, "diagnostics": {"enabled": True, "every": 2},
         "alignment": {"enabled": True, "epochs": 2}}
    )
    train_group_models(
        tmp_path / "examples.parquet", tmp_path / "tasks.parquet", {key: members},
        tmp_path / "results.parquet", tmp_path / "models", [], [4],
        {"epochs": 3, "lr": 0.02, "batch_size": 32, "weight_decay": 0.0}, [0, 1],
        options=options, variant="reweighted_aligned", diagnostics_path=tmp_path / "d.parquet",
        selection={"fraction": 0.5, "seed": 0}, budget="epochs", patience=None,
    )
    results = read_table(tmp_path / "results.parquet", GROUP_RESULTS)
    assert set(results["variant"]) == {"reweighted_aligned"}
    weights = results.groupby("task")["loss_weight"].agg(["min", "max"])
    assert sorted(weights.index) == members
    assert (weights["min"] == weights["max"]).all()  # the same weight on every seed, split
    assert weights["min"].mean() == pytest.approx(1.0)
    assert weights["min"].std() > 0  # the tasks differ, so do their weights
    diagnostics = read_table(tmp_path / "d.parquet", DIAGNOSTICS)
    assert set(diagnostics["variant"]) == {"reweighted_aligned"}
    assert set(diagnostics["seed"]) == {0, 1}
    assert set(diagnostics["phase"]) == {"joint", "alignment", "final"}
    assert sorted(diagnostics.query("phase == 'joint'")["epoch"].unique()) == [0, 2, 3]
    assert sorted(diagnostics.query("phase == 'alignment'")["epoch"].unique()) == [5]
    with pytest.raises(ValueError, match="diagnostics: enabled=True but its output path"):
        train_group_models(
            tmp_path / "examples.parquet", tmp_path / "tasks.parquet", {key: members},
            tmp_path / "r.parquet", tmp_path / "models", [], [4],
            {"epochs": 1, "lr": 0.02, "batch_size": 32}, [0], options=options,
            selection={"fraction": 0.5, "seed": 0}, budget="epochs", patience=None,
        )


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda o: o["final"]["reweighting"].update(rank=0),
         r"0 is less than the minimum of 1[\s\S]*\['training_options'\]\['final'\]"
         r"\['reweighting'\]\['rank'\]"),
        (lambda o: o["final"]["diagnostics"].update(every="often"),
         r"'often' is not of type 'integer'[\s\S]*\['diagnostics'\]\['every'\]"),
        (lambda o: o["meta_init"].update(alignment={"enabled": True}),
         r"Additional properties are not allowed \('alignment' was unexpected\)"),
        (lambda o: o["final"]["alignment"].update(lr=-1.0),
         r"-1.0 is less than the minimum of 0[\s\S]*\['alignment'\]\['lr'\]"),
        (lambda o: o["final"].update(variants=["plain", "boosted"]),
         r"'boosted' is not one of \['plain', 'reweighted', 'aligned', 'reweighted_aligned'\]"),
        (lambda o: o["final"].update(variants=[]),
         r"\[\] should be non-empty|\[\] is too short"),
        (lambda o: o["final"]["reweighting"].update(enabled=True),
         r"Additional properties are not allowed \('enabled' was unexpected\)"),
    ],
)
def test_training_options_are_validated(mutate, message):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate(copy.deepcopy(config), SCHEMA)
    mutate(config["training_options"])
    with pytest.raises(Exception, match=message):
        validate(config, SCHEMA)


def test_default_options_are_off_and_enabled_ones_get_defaults():
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert enabled_options(config["training_options"]["meta_init"]) == {}
    final = config["training_options"]["final"]
    assert final["variants"] == ["plain"]
    assert variant_options(final, "plain") == {}
    assert variant_options(final, "reweighted") == {"reweighting": {"enabled": True, "rank": 1}}
    both = variant_options({**final, "diagnostics": {"enabled": True}}, "reweighted_aligned")
    assert sorted(both) == ["alignment", "diagnostics", "reweighting"]
    assert both["alignment"] == {"enabled": True, "epochs": 20, "head_lr": 0.001, "lr": 0.001}
    with pytest.raises(ValueError, match="unknown variant 'boosted'"):
        variant_options(final, "boosted")
    assert enabled_options({"diagnostics": {"enabled": True}}) == {
        "diagnostics": {"enabled": True, "every": 10}
    }


def test_generalization_gaps_pair_each_group_task_with_its_single_task_model():
    def run(variant, key, *tasks_and_trajectories):
        table = pd.concat([_diag(task, trajectory, final)
                           for task, trajectory, final in tasks_and_trajectories])
        return table.assign(variant=variant, group_key=key, seed=0)

    group = run("plain", "ab", ("a", {0: (0.7, 0.7), 10: (0.5, 0.6)}, (10, 0.5, 0.6)),
                ("b", {0: (0.7, 0.7), 10: (0.3, 0.4)}, (10, 0.3, 0.4)))
    alone_a = run("plain", "a", ("a", {0: (0.7, 0.7), 10: (0.45, 0.5)}, (10, 0.45, 0.5)))
    alone_b = run("plain", "b", ("b", {0: (0.7, 0.7), 10: (0.3, 0.45)}, (10, 0.3, 0.45)))
    other_variant = run("aligned", "ab", ("a", {0: (0.7, 0.7)}, (0, 0.7, 0.7)),
                        ("b", {0: (0.7, 0.7)}, (0, 0.7, 0.7)))
    gaps = generalization_gaps({
        ("plain", "ab"): group, ("plain", "a"): alone_a, ("plain", "b"): alone_b,
        ("aligned", "ab"): other_variant,  # no aligned single-task models: no rows
    }).set_index("task")
    assert list(gaps.index) == ["a", "b"]
    assert (gaps["variant"] == "plain").all() and (gaps["n_tasks"] == 2).all()
    assert gaps.loc["a", "gap"] == pytest.approx(0.1)  # matched at epoch 10: 0.6 - 0.5
    assert gaps.loc["b", "gap"] == pytest.approx(-0.05)
    assert generalization_gaps({("plain", "ab"): group}).empty
