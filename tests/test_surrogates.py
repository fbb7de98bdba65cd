import logging

import numpy as np
import pandas as pd
import pytest

from taskgroup.data.designs import design_table, random_design, singletons_and_pairs
from taskgroup.group.surrogates import (
    SurrogateSettings,
    fit,
    membership_design,
    pairwise_transfer,
    score_negative_transfer,
    selected_sources,
    with_singletons,
)

NAMES = [f"t{i}" for i in range(8)]


def settings(alpha=1e-2, n_folds=5, seed=0):
    """The settings of the fit (threshold and anchor_singletons are not used by ``fit``)."""
    return SurrogateSettings(
        alpha=alpha, n_folds=n_folds, threshold=0.0, seed=seed, anchor_singletons=False
    )


def additive_values(subsets, names, base, theta, noise, seed):
    """f_i(S) = base_i + sum_{j in S, j != i} theta[i, j] + N(0, noise^2), per member i."""
    rng = np.random.default_rng(seed)
    index = {name: position for position, name in enumerate(names)}
    rows = []
    for subset_id, members in subsets.groupby("subset_id")["task"]:
        held = [index[name] for name in members]
        for i in held:
            loss = base[i] + sum(theta[i, j] for j in held if j != i) + noise * rng.normal()
            rows.append((subset_id, names[i], "val", loss, 0.5, "finetune"))
    return pd.DataFrame(
        rows, columns=["subset_id", "task", "split", "loss", "metric", "estimator"]
    )


def random_sized_subsets(names, count, seed):
    """``count`` random subsets of random sizes 1..k (so the intercept is identifiable)."""
    rng = np.random.default_rng(seed)
    design = []
    for _ in range(count):
        size = int(rng.integers(1, len(names) + 1))
        design.append(tuple(sorted(rng.choice(len(names), size=size, replace=False).tolist())))
    return design_table(design, names)


@pytest.fixture
def planted_theta():
    rng = np.random.default_rng(3)
    k = len(NAMES)
    theta = rng.normal(0.0, 0.05, size=(k, k))
    np.fill_diagonal(theta, 0.0)
    base = rng.uniform(0.4, 0.7, size=k)
    return base, theta


def as_matrix(coefficients, column="coefficient"):
    return (
        coefficients.pivot(index="target", columns="source", values=column)
        .reindex(index=NAMES, columns=NAMES)
        .to_numpy()
    )


def test_surrogate_recovers_additive_coefficients(planted_theta):
    base, theta = planted_theta
    subsets = random_sized_subsets(NAMES, count=300, seed=0)
    values = additive_values(subsets, NAMES, base, theta, noise=0.005, seed=1)
    coefficients, quality = fit(subsets, values, NAMES, settings())

    assert list(coefficients.columns) == ["target", "source", "coefficient", "intercept",
                                          "n_subsets"]
    assert len(coefficients) == len(NAMES) * (len(NAMES) - 1)
    assert (coefficients["target"] != coefficients["source"]).all()
    fitted = as_matrix(coefficients)
    off = ~np.eye(len(NAMES), dtype=bool)
    np.testing.assert_allclose(fitted[off], theta[off], atol=0.005)
    intercept = coefficients.groupby("target")["intercept"].first().reindex(NAMES)
    np.testing.assert_allclose(intercept, base, atol=0.005)

    assert list(quality.columns) == ["target", "n_subsets", "mse", "r2", "spearman"]
    assert quality["n_subsets"].tolist() == (
        subsets.groupby("task").size().reindex(NAMES).tolist()
    )
    assert (quality["r2"] > 0.95).all() and (quality["spearman"] > 0.9).all()
    assert quality["mse"].max() < 0.005**2 * 2
    # same seed, same folds, same numbers
    pd.testing.assert_frame_equal(quality, fit(subsets, values, NAMES, settings())[1])


def test_fixed_size_design_gives_coefficients_relative_to_the_average_source(planted_theta):
    base, theta = planted_theta
    subsets = random_design(NAMES, size=4, count=60, seed=2)
    values = additive_values(subsets, NAMES, base, theta, noise=0.0, seed=0)
    coefficients, _ = fit(subsets, values, NAMES, settings(alpha=1e-8))
    fitted = as_matrix(coefficients)
    off = ~np.eye(len(NAMES), dtype=bool)
    relative = np.where(off, theta, np.nan)
    relative = relative - np.nanmean(relative, axis=1, keepdims=True)
    np.testing.assert_allclose(fitted[off], relative[off], atol=1e-5)


def test_surrogate_on_the_pair_design_is_the_pairwise_transfer(planted_theta, caplog):
    base, theta = planted_theta
    subsets = design_table(singletons_and_pairs(len(NAMES)), NAMES)
    values = additive_values(subsets, NAMES, base, theta, noise=0.0, seed=0)
    with caplog.at_level(logging.WARNING, logger="taskgroup.group.surrogates"):
        coefficients, quality = fit(subsets, values, NAMES, settings(alpha=1e-9))
    # 8 subsets per target are too few for 5-fold hold-out
    assert quality["r2"].isna().all() and quality["spearman"].isna().all()
    assert "fewer than 2 * n_folds = 10" in caplog.text
    pairwise = pairwise_transfer(values, NAMES)
    merged = coefficients.merge(pairwise, on=["target", "source"])
    assert len(merged) == len(NAMES) * (len(NAMES) - 1)
    np.testing.assert_allclose(merged["coefficient"], merged["transfer"], atol=1e-6)
    np.testing.assert_allclose(merged["transfer"], theta[
        merged["target"].map(NAMES.index), merged["source"].map(NAMES.index)
    ], atol=1e-12)
    overall = score_negative_transfer(coefficients, pairwise, 0.0).iloc[-1]
    assert overall["f1"] == 1.0


def hand_made_values():
    """Three tasks: every singleton (a twice), every pair, and a triple that must be ignored."""
    rows = [
        (0, "a", 0.49), (1, "b", 0.40), (2, "c", 0.60), (3, "a", 0.51),
        (4, "a", 0.45), (4, "b", 0.42),
        (5, "a", 0.55), (5, "c", 0.58),
        (6, "b", 0.39), (6, "c", 0.61),
        (7, "a", 9.0), (7, "b", 9.0), (7, "c", 9.0),
    ]
    frame = pd.DataFrame(rows, columns=["subset_id", "task", "loss"])
    return frame.assign(split="val", metric=0.5, estimator="finetune")


def test_pairwise_transfer_and_negative_transfer_scores_on_a_hand_made_table():
    pairwise = pairwise_transfer(hand_made_values(), ["a", "b", "c"])
    assert list(pairwise.columns) == ["target", "source", "loss_alone", "loss_with",
                                      "transfer", "negative"]
    assert list(zip(pairwise["target"], pairwise["source"])) == [
        ("a", "b"), ("a", "c"), ("b", "a"), ("b", "c"), ("c", "a"), ("c", "b")
    ]
    np.testing.assert_allclose(pairwise["loss_alone"], [0.5, 0.5, 0.4, 0.4, 0.6, 0.6])
    np.testing.assert_allclose(pairwise["transfer"], [-0.05, 0.05, 0.02, -0.01, -0.02, 0.01])
    assert pairwise["negative"].tolist() == [False, True, True, False, False, True]

    coefficients = pd.DataFrame(
        {
            "target": ["a", "a", "b", "b", "c", "c"],
            "source": ["b", "c", "a", "c", "a", "b"],
            # predicted negative:  no    yes    no    yes    no    yes
            "coefficient": [-0.03, 0.04, -0.01, 0.02, -0.02, 0.03],
        }
    )
    scores = score_negative_transfer(coefficients, pairwise, threshold=0.0)
    assert scores["level"].tolist() == ["target", "target", "target", "overall"]
    assert scores["target"].tolist()[:3] == ["a", "b", "c"]
    assert pd.isna(scores["target"].iloc[3])
    counts = scores[["n_pairs", "tp", "fp", "fn", "tn"]].to_numpy().tolist()
    assert counts == [[2, 1, 0, 0, 1], [2, 0, 1, 1, 0], [2, 1, 0, 0, 1], [6, 2, 1, 1, 2]]
    np.testing.assert_allclose(scores["precision"], [1.0, 0.0, 1.0, 2 / 3])
    np.testing.assert_allclose(scores["recall"], [1.0, 0.0, 1.0, 2 / 3])
    np.testing.assert_allclose(scores["f1"], [1.0, 0.0, 1.0, 2 / 3])

    # a higher threshold predicts fewer negatives: only (a, c) stays -> tp 1, fn 2
    strict = score_negative_transfer(coefficients, pairwise, threshold=0.035).iloc[-1]
    assert (strict["tp"], strict["fp"], strict["fn"], strict["tn"]) == (1, 0, 2, 3)
    assert strict["precision"] == 1.0 and strict["recall"] == pytest.approx(1 / 3)
    assert strict["f1"] == pytest.approx(0.5)
    # no predicted negative for a target: precision undefined (NaN), not 0
    none = score_negative_transfer(coefficients, pairwise, threshold=1.0)
    assert none["precision"].isna().all() and (none["recall"].iloc[:3] == 0.0).all()

    chosen = selected_sources(coefficients, threshold=0.015)
    assert list(zip(chosen["target"], chosen["source"])) == [("a", "b"), ("c", "a")]
    assert list(selected_sources(coefficients, threshold=0.0)["source"]) == ["b", "a", "a"]


def test_missing_pair_design_entries_are_named():
    values = hand_made_values()
    values = values[~values["subset_id"].isin([2, 6])]  # drop singleton c and pair {b, c}
    with pytest.raises(ValueError) as error:
        pairwise_transfer(values, ["a", "b", "c"])
    message = str(error.value)
    assert "1 singleton(s) without a 'val' loss, e.g. ['c']" in message
    assert "1 pair(s) without 'val' losses of both members, e.g. [('b', 'c')]" in message


def test_membership_design_shapes_and_missing_loss():
    subsets = design_table([(0, 1, 2), (1, 3), (0, 3)], ["a", "b", "c", "d"])
    values = additive_values(subsets, ["a", "b", "c", "d"], np.zeros(4), np.ones((4, 4)),
                             noise=0.0, seed=0)
    design = membership_design(subsets, values, "a", ["a", "b", "c", "d"])
    assert design.sources == ["b", "c", "d"]
    assert design.subset_ids.tolist() == [0, 2]
    np.testing.assert_array_equal(design.x, [[1, 1, 0], [0, 0, 1]])
    np.testing.assert_allclose(design.y, [2.0, 1.0])
    with pytest.raises(ValueError, match=r"no 'val' loss of task 'a' for 1 subset\(s\).*\[2\]"):
        membership_design(subsets, values.drop(index=values.index[-2]), "a",
                          ["a", "b", "c", "d"])


def test_tables_mixing_designs_are_refused():
    values = pd.concat(
        [hand_made_values().assign(design="pairs"), hand_made_values().assign(design="random")]
    )
    with pytest.raises(ValueError, match=r"several designs \['pairs', 'random'\]"):
        pairwise_transfer(values, ["a", "b", "c"])


def test_singletons_anchor_a_fixed_size_design_to_absolute_effects(planted_theta):
    base, theta = planted_theta
    subsets = random_design(NAMES, size=4, count=60, seed=2).assign(design="random")
    values = additive_values(subsets, NAMES, base, theta, noise=0.0, seed=0)
    pairs = design_table(singletons_and_pairs(len(NAMES)), NAMES)
    pair_values = additive_values(pairs, NAMES, base, theta, noise=0.0, seed=1)
    anchored_subsets, anchored_values = with_singletons(subsets, values, pair_values)
    assert anchored_subsets["subset_id"].is_unique is False  # long table, one row per member
    assert anchored_subsets["subset_id"].nunique() == 60 + len(NAMES)
    assert (anchored_values["design"] == "random+singletons").all()
    coefficients, _ = fit(anchored_subsets, anchored_values, NAMES, settings(alpha=1e-8))
    off = ~np.eye(len(NAMES), dtype=bool)
    np.testing.assert_allclose(as_matrix(coefficients)[off], theta[off], atol=1e-5)
    scores = score_negative_transfer(coefficients, pairwise_transfer(pair_values, NAMES), 0.0)
    assert scores[scores["level"] == "overall"]["f1"].iloc[0] == 1.0
