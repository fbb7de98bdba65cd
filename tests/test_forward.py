"""The forward-selection design: the greedy search on an additive oracle, the stage on tiny
real data with both estimators, the comparison with the surrogates, and its scheduling by
Snakemake."""

import numpy as np
import pandas as pd
import pytest
from conftest import small_spec
from workflow_helpers import make_workdir, scheduled_jobs, smoke_config, snakemake

from taskgroup.data.datasets.planted import generate_planted
from taskgroup.data.tables import FORWARD_SELECTION, SUBSET_VALUES, read_table, write_table
from taskgroup.estimate.finetune import FinetuneSettings
from taskgroup.estimate.forward import ForwardSettings, greedy_forward, select_forward
from taskgroup.estimate.settings import GradientEstimateSettings, ProjectionSettings
from taskgroup.group.surrogates import compare_with_forward
from taskgroup.models.training import TrainSettings
from taskgroup.stages.estimate import estimate_subsets, project_gradients
from taskgroup.stages.finetune import finetune_subsets
from taskgroup.stages.forward import forward_selection
from taskgroup.stages.meta_init import train_meta_init

ESTIMATE = GradientEstimateSettings(l2=0.03, newton_steps=1, max_relative_shift=None)
FINETUNE = FinetuneSettings(
    TrainSettings(epochs=1, lr=0.01, batch_size=64, weight_decay=0.0), seed=0
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """6 planted tasks (3 groups of 2), a meta-initialization and projected gradients."""
    folder = tmp_path_factory.mktemp("forward")
    examples, tasks = generate_planted(small_spec(tasks_per_group=2))
    paths = {name: folder / f"{name}.parquet" for name in
             ("examples", "tasks", "metrics", "projected", "projection")}
    paths["model"] = folder / "model.pt"
    write_table(examples, paths["examples"])
    write_table(tasks, paths["tasks"])
    train_meta_init(
        paths["examples"], paths["tasks"], paths["model"], paths["metrics"], [4],
        {"epochs": 5, "lr": 0.01, "batch_size": 64, "weight_decay": 0.0}, seed=0,
    )
    project_gradients(
        paths["examples"], paths["tasks"], paths["model"], paths["projected"],
        paths["projection"],
        ProjectionSettings("kronecker", "rademacher", 0, dim=1024, nonzeros=None), 1024,
    )
    paths["folder"] = folder
    paths["names"] = tasks.sort_values("task_index")["task"].tolist()
    return paths


def run_stage(paths, estimator, out, max_size, min_improvement=0.0):
    forward_selection(
        estimator, paths["tasks"], paths["model"], out / "values.parquet",
        out / "selection.parquet", ForwardSettings(max_size, min_improvement),
        projected_path=paths["projected"], projection_path=paths["projection"],
        examples_path=paths["examples"], estimate=ESTIMATE, finetune=FINETUNE,
    )
    return (read_table(out / "values.parquet", SUBSET_VALUES),
            read_table(out / "selection.parquet", FORWARD_SELECTION))


def members_of(values):
    return {subset_id: frozenset(rows) for subset_id, rows in values.groupby("subset_id")["task"]}


def expected_evaluations(selection, names, max_size):
    """Every subset forward selection must have valued, rebuilt from the accepted paths: the
    target alone, then per attempted step the current subset plus each remaining task (a
    last, rejected step when the path stopped below max_size with tasks left)."""
    subsets = set()
    for target, path in selection.groupby("target", sort=False):
        chosen = list(path.sort_values("step")["added"])
        attempted = len(chosen) if len(chosen) == max_size else len(chosen) + 1
        attempted = min(attempted, len(names))
        subsets.add(frozenset([target]))
        for step in range(1, attempted):
            current = chosen[:step]
            subsets.update(frozenset(current + [other]) for other in names if other not in current)
    return subsets


def check_paths_and_coverage(values, selection, names, max_size, min_improvement):
    members = members_of(values)
    assert sorted(members) == list(range(len(members)))  # ids 0..n-1
    assert len(set(members.values())) == len(members)  # each subset valued once
    assert (values["design"] == "forward").all()
    assert selection["target"].unique().tolist() == names
    loss_of = values.set_index(["subset_id", "task"])["loss"]
    for target, path in selection.groupby("target", sort=False):
        path = path.sort_values("step")
        assert path["step"].tolist() == list(range(len(path)))
        assert path["added"].iloc[0] == target and path["size"].iloc[0] == 1
        assert (path["size"] == path["step"] + 1).all() and path["size"].max() <= max_size
        assert (np.diff(path["loss"]) < -min_improvement).all()
        for step in range(len(path)):
            expected = frozenset(path["added"].iloc[: step + 1])
            assert members[path["subset_id"].iloc[step]] == expected
            assert path["loss"].iloc[step] == loss_of[(path["subset_id"].iloc[step], target)]
    assert set(members.values()) == expected_evaluations(selection, names, max_size)


def value_again(values, folder):
    """The forward subsets as a subsets table, for the regular per-chunk stages."""
    subsets = values[["subset_id", "task"]].assign(design="forward")
    path = folder / "forward_subsets.parquet"
    write_table(subsets, path)
    return path, int(values["subset_id"].nunique())


def test_gradient_oracle_matches_the_regular_estimate_and_records_every_evaluation(
    prepared, tmp_path
):
    names = prepared["names"]
    values, selection = run_stage(prepared, "gradient", tmp_path, max_size=3)
    check_paths_and_coverage(values, selection, names, 3, 0.0)
    assert selection.groupby("target")["step"].max().max() >= 1  # some source helps
    subsets_path, count = value_again(values, tmp_path)
    estimate_subsets(
        prepared["projected"], prepared["projection"], prepared["model"], subsets_path,
        prepared["tasks"], tmp_path / "regular.parquet", chunk=0, chunk_size=count,
        settings=ESTIMATE,
    )
    regular = read_table(tmp_path / "regular.parquet", SUBSET_VALUES)
    pd.testing.assert_frame_equal(
        values.drop(columns=["loss", "metric", "relative_shift"]),
        regular.drop(columns=["loss", "metric", "relative_shift"]),
    )
    # to float32 rounding: the validation outputs are float32 products, and a product's
    # rounding depends on how many subsets share it (the oracle values a few at a time)
    np.testing.assert_allclose(values["loss"], regular["loss"], rtol=1e-7)
    # same config, same bytes
    again = tmp_path / "again"
    run_stage(prepared, "gradient", again, max_size=3)
    for name in ("values.parquet", "selection.parquet"):
        assert (again / name).read_bytes() == (tmp_path / name).read_bytes()


def test_finetune_oracle_matches_the_regular_finetuning(prepared, tmp_path):
    names = prepared["names"]
    values, selection = run_stage(prepared, "finetune", tmp_path, max_size=2)
    check_paths_and_coverage(values, selection, names, 2, 0.0)
    subsets_path, count = value_again(values, tmp_path)
    finetune_subsets(
        prepared["examples"], prepared["tasks"], prepared["model"], subsets_path,
        tmp_path / "regular.parquet", chunk=0, chunk_size=count, settings=FINETUNE,
    )
    regular = read_table(tmp_path / "regular.parquet", SUBSET_VALUES)
    pd.testing.assert_frame_equal(values, regular)


def test_min_improvement_and_max_size_one_stop_the_paths():
    names = ["a", "b", "c"]

    def additive(subsets):
        effect = {"a": -0.2, "b": -0.05, "c": 0.3}
        rows = []
        for subset_id, members in subsets.groupby("subset_id")["task"]:
            for task in members:
                loss = 1.0 + sum(effect[other] for other in members if other != task)
                rows.append((subset_id, task, "val", loss, 0.5, "test"))
        return pd.DataFrame(rows, columns=list(SUBSET_VALUES)[:-1])

    settings = ForwardSettings(max_size=3, min_improvement=0.1)
    values, selection = select_forward(additive, names, settings)
    assert selection.groupby("target")["added"].apply(list).to_dict() == {
        "a": ["a"], "b": ["b", "a"], "c": ["c", "a"],
    }
    check_paths_and_coverage(values, selection, names, 3, 0.1)
    settings = ForwardSettings(max_size=1, min_improvement=0.0)
    values, selection = select_forward(additive, names, settings)
    assert values["subset_id"].nunique() == 3 and (selection["step"] == 0).all()
    with pytest.raises(ValueError, match="max_size = 4 must be between 1 and .* k = 3"):
        select_forward(additive, names, ForwardSettings(max_size=4, min_improvement=0.0))


THETA = {1: -0.3, 2: 0.2, 3: -0.1, 4: 0.0, 5: -0.05, 6: 0.4}


def additive_oracle(calls):
    def value(batch):
        calls.append(list(batch))
        return np.array([1.0 + sum(THETA[j] for j in subset if j != 0) for subset in batch])

    return value


def test_greedy_forward_adds_exactly_the_helpful_sources_then_stops():
    calls = []
    path = greedy_forward(0, [1, 2, 3, 4, 5, 6], additive_oracle(calls), max_size=10,
                          min_improvement=0.02)
    steps = [step for step, _, _ in path]
    subsets = [subset for _, subset, _ in path]
    losses = np.array([loss for _, _, loss in path])
    assert steps == [0, 1, 2, 3]
    assert subsets == [(0,), (0, 1), (0, 1, 3), (0, 1, 3, 5)]
    np.testing.assert_allclose(losses, [1.0, 0.7, 0.6, 0.55])
    # one call for {target}, then one batch per step: 6, 5, 4 candidates, and the final
    # rejected batch of 3 (sources 2, 4, 6 would not lower the loss)
    assert [len(batch) for batch in calls] == [1, 6, 5, 4, 3]
    assert calls[1] == [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 6)]


def test_greedy_forward_respects_max_size_and_min_improvement():
    path = greedy_forward(0, [1, 2, 3, 4, 5, 6], additive_oracle([]), max_size=2,
                          min_improvement=0.0)
    assert [subset for _, subset, _ in path] == [(0,), (0, 1)]
    # improvement of source 5 (0.05) is not more than 0.05: it is not added
    path = greedy_forward(0, [1, 2, 3, 4, 5, 6], additive_oracle([]), max_size=10,
                          min_improvement=0.05)
    assert path[-1][1] == (0, 1, 3)
    path = greedy_forward(0, [1, 2, 3, 4, 5, 6], additive_oracle([]), max_size=1,
                          min_improvement=0.0)
    assert path == [(0, (0,), 1.0)]


def test_greedy_forward_rejects_bad_inputs():
    with pytest.raises(ValueError, match="the target 0 is among the candidates"):
        greedy_forward(0, [0, 1], additive_oracle([]), max_size=3, min_improvement=0.0)
    with pytest.raises(ValueError, match=r"returned 1 losses for 6 subsets"):
        greedy_forward(0, [1, 2, 3, 4, 5, 6], lambda batch: [1.0], max_size=3,
                       min_improvement=0.0)


def test_comparison_with_the_surrogate_sets():
    coefficients = pd.DataFrame(
        {
            "target": ["a"] * 3 + ["b"] * 3,
            "source": ["b", "c", "d", "a", "c", "d"],
            "coefficient": [-0.3, -0.1, 0.2, 0.1, 0.05, 0.2],
            "intercept": [1.0] * 3 + [2.0] * 3,
            "n_subsets": np.full(6, 4, dtype=np.int64),
        }
    )
    selection = pd.DataFrame(
        {
            "target": ["a", "a", "a", "b"],
            "step": np.array([0, 1, 2, 0], dtype=np.int64),
            "added": ["a", "b", "d", "b"],
            "size": np.array([1, 2, 3, 1], dtype=np.int64),
            "subset_id": np.array([0, 4, 9, 1], dtype=np.int64),
            "loss": [0.9, 0.7, 0.65, 2.1],
        }
    )
    table = compare_with_forward(coefficients, selection, threshold=0.0).set_index("target")
    a, b = table.loc["a"], table.loc["b"]
    # a: surrogate {b, c}, forward {b, d}: one in common of three
    assert (a["n_surrogate"], a["n_forward"], a["n_both"]) == (2, 2, 1)
    assert a["jaccard"] == pytest.approx(1 / 3)
    assert a["top_jaccard"] == pytest.approx(1 / 3)  # top two by coefficient: b, c
    assert (a["alone_loss"], a["forward_loss"]) == (0.9, 0.65)
    assert a["predicted_surrogate"] == pytest.approx(1.0 - 0.4)
    assert a["predicted_forward"] == pytest.approx(1.0 - 0.3 + 0.2)
    # b: neither selects a source
    assert (b["n_surrogate"], b["n_forward"], b["jaccard"], b["top_jaccard"]) == (0, 0, 1, 1)
    assert b["predicted_surrogate"] == b["predicted_forward"] == 2.0
    with pytest.raises(ValueError, match="no path for target 'b'"):
        compare_with_forward(coefficients, selection[selection["target"] == "a"])


@pytest.mark.workflow
@pytest.mark.parametrize("enabled", [True, False])
def test_forward_selection_is_scheduled_only_when_enabled(tmp_path, enabled):
    config = smoke_config()
    config["subsets"]["forward_selection"] = {"enabled": enabled, "max_size": 3,
                                              "min_improvement": 0.0}
    result = snakemake(make_workdir(tmp_path, config), "-n", "--printshellcmds")
    jobs = scheduled_jobs(result.stdout + result.stderr)
    assert ("forward_selection" in jobs) == enabled, jobs
    assert ("surrogates/forward_comparison.parquet" in result.stdout) == enabled
    assert jobs["fit_surrogates"] == 1
