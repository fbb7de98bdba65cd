"""Compare groupings on the test metrics of their per-group models."""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskgroup.data.designs import pair_counts
from taskgroup.group.groupings import adjusted_rand_index, group_keys


def ari_against_planted(grouping: pd.DataFrame, tasks: pd.DataFrame) -> float:
    """Adjusted Rand index of a grouping against the planted groups (NaN if none known)."""
    planted = tasks.set_index("task")["planted_group"]
    if planted.isna().any():
        return float("nan")
    truth = planted.loc[grouping["task"]].to_numpy(dtype=np.int64)
    return float(adjusted_rand_index(truth, grouping["group"].to_numpy()))


def variant_order(variants) -> list[str]:
    """Final-training variants in reporting order: plain first, then by name."""
    return sorted(set(variants), key=lambda variant: (variant != "plain", variant))


def per_task_table(groupings: dict[str, pd.DataFrame], results: pd.DataFrame) -> pd.DataFrame:
    """One row per (grouping, variant, seed, task): grouping, variant, seed, task, cluster,
    group_key, loss_weight, test_loss, test_metric, val_loss, val_metric (on the validation
    rows early stopping read, split "val_stop"), val_select_loss, val_select_metric,
    val_select_n (on the rows held out for the recommendation, split "val_select"; n: their
    number).

    groupings: name -> grouping table (task, group); results: the group_results tables of
    every trained group and final-training variant, concatenated (one row per variant,
    group_key, seed, task, split)."""
    index = ["variant", "group_key", "seed", "task"]
    wide = results.pivot_table(
        index=index, columns="split", values=["loss", "metric", "n_examples"]
    )
    names = {"val_stop": "val", "n_examples": "n"}
    wide.columns = [
        f"{names.get(split, split)}_{names.get(value, value)}" for value, split in wide.columns
    ]
    weights = results.groupby(index)["loss_weight"].first()
    wide = wide.join(weights).reset_index()
    frames = []
    for variant in variant_order(results["variant"]):
        trained = wide[wide["variant"] == variant]
        for name, grouping in groupings.items():
            keyed = group_keys(grouping).rename(columns={"group": "cluster"})
            joined = keyed.merge(trained, on=["group_key", "task"], how="left")
            missing = joined.loc[joined["seed"].isna(), "task"].tolist()
            if missing:
                raise ValueError(
                    f"grouping {name!r}, variant {variant!r}: no group results for tasks "
                    f"{missing[:5]}"
                )
            frames.append(joined.assign(grouping=name, variant=variant))
    columns = [
        "grouping", "variant", "seed", "task", "cluster", "group_key", "loss_weight",
        "test_loss", "test_metric", "val_loss", "val_metric", "val_select_loss",
        "val_select_metric", "val_select_n",
    ]
    table = pd.concat(frames, ignore_index=True)[columns]
    table["seed"] = table["seed"].astype(np.int64)
    table["val_select_n"] = table["val_select_n"].astype(np.int64)
    table["variant"] = pd.Categorical(table["variant"], variant_order(table["variant"]))
    table = table.sort_values(["grouping", "variant", "seed", "task"], ignore_index=True)
    table["variant"] = table["variant"].astype(str)
    return table


def describe_grouping(name: str) -> dict:
    """kind ("clustered", "baseline", "random"), affinity_source and method of a grouping
    name ("<source>-<method>", a baseline name, or "random_<i>")."""
    if "-" in name:
        source, method = name.split("-", 1)
        return {"kind": "clustered", "affinity_source": source, "method": method}
    if name.startswith("random_"):
        return {"kind": "random", "affinity_source": "", "method": "random"}
    return {"kind": "baseline", "affinity_source": "", "method": name}


def _per_seed_means(per_task: pd.DataFrame, name: str, variant: str) -> pd.Series:
    chosen = per_task[(per_task["grouping"] == name) & (per_task["variant"] == variant)]
    return chosen.groupby("seed")["test_metric"].mean()


def _spread(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def _within_spread(change: pd.Series, spread: pd.Series) -> pd.Series:
    """|change| <= spread per row (the change is not distinguishable from seed noise), NA
    where the spread is undefined (one seed)."""
    within = (change.abs() <= spread).astype("boolean")
    within[spread.isna()] = pd.NA
    return within


def diverged_models(results: pd.DataFrame) -> set[tuple[str, str, int]]:
    """The (variant, group_key, seed) of every group model whose training loss ended far
    above its start (the ``diverged`` column of the group_results tables ``results``)."""
    flagged = results.loc[results["diverged"], ["variant", "group_key", "seed"]]
    return {(variant, key, int(seed)) for variant, key, seed in flagged.itertuples(index=False)}


def _grouping_row(
    per_task: pd.DataFrame, name: str, variant: str, grouping: pd.DataFrame,
    tasks: pd.DataFrame, reference: str, reference_means: pd.Series | None,
    diverged: set,
) -> dict:
    chosen = per_task[(per_task["grouping"] == name) & (per_task["variant"] == variant)]
    means = _per_seed_means(per_task, name, variant)
    models = chosen[["group_key", "seed"]].drop_duplicates()
    row = {
        "grouping": name,
        "variant": variant,
        **describe_grouping(name),
        "n_groups": int(grouping["group"].nunique()),
        "n_seeds": int(len(means)),
        "mean_test_metric": float(means.mean()),
        "sd_test_metric": _spread(means),
        "mean_test_loss": float(chosen["test_loss"].mean()),
        "mean_val_metric": float(chosen["val_metric"].mean()),
        "ari_vs_planted": ari_against_planted(grouping, tasks),
    }
    if reference_means is not None:
        paired = (means - reference_means).dropna()
        row[f"gain_vs_{reference}"] = float(paired.mean())
        row["sd_gain"] = _spread(paired)
    row["n_diverged"] = sum(
        (variant, key, int(seed)) in diverged for key, seed in models.itertuples(index=False)
    )
    return row


def _random_mean_row(random_rows: pd.DataFrame, reference: str) -> dict:
    """The random partitions of one variant pooled: means of their rows, spreads across
    partitions."""
    pooled = random_rows.iloc[0].to_dict()
    pooled.update(grouping="random_mean", kind="random_mean")
    averaged = ["mean_test_metric", "mean_test_loss", "mean_val_metric", "ari_vs_planted"]
    gain = f"gain_vs_{reference}"
    if gain in random_rows:
        averaged.append(gain)
        pooled["sd_gain"] = _spread(random_rows[gain])
    pooled.update({column: float(random_rows[column].mean()) for column in averaged})
    pooled["sd_test_metric"] = _spread(random_rows["mean_test_metric"])
    pooled["n_diverged"] = int(random_rows["n_diverged"].sum())
    return pooled


def summary_table(
    per_task: pd.DataFrame, groupings: dict[str, pd.DataFrame], tasks: pd.DataFrame,
    reference: str = "naive_mtl", diverged: set | frozenset = frozenset(),
) -> pd.DataFrame:
    """One row per (grouping, final-training variant), plus per variant one "random_mean"
    row averaging the random partitions.

    Columns: grouping, variant, kind, affinity_source, method, n_groups, n_seeds,
    mean_test_metric (mean over training seeds of the mean over tasks), sd_test_metric
    (standard deviation of that mean across seeds; across partitions for random_mean),
    mean_test_loss, mean_val_metric, ari_vs_planted (NaN without planted groups),
    gain_vs_<reference> (mean over seeds of the paired per-seed difference in mean test
    metric, against the reference grouping trained the same way), sd_gain (its spread
    across seeds) and within_spread (|gain| <= sd_gain: the difference is not
    distinguishable from seed noise; NA with one seed or without the reference), and last
    n_diverged (int64: how many of the grouping's group models, over groups and seeds,
    are in ``diverged``, the (variant, group_key, seed) of the trainings whose loss ended
    far above its start (:func:`diverged_models`); summed over the partitions for
    random_mean). A row with n_diverged > 0 compares models that may not have trained."""
    rows = []
    for variant in variant_order(per_task["variant"]):
        reference_means = (
            _per_seed_means(per_task, reference, variant) if reference in groupings else None
        )
        variant_rows = [
            _grouping_row(
                per_task, name, variant, grouping, tasks, reference, reference_means, diverged
            )
            for name, grouping in groupings.items()
        ]
        random_rows = pd.DataFrame(variant_rows)
        random_rows = random_rows[random_rows["kind"] == "random"]
        if len(random_rows):
            variant_rows.append(_random_mean_row(random_rows, reference))
        rows += variant_rows
    summary = pd.DataFrame(rows)
    if f"gain_vs_{reference}" in summary:
        within = _within_spread(summary[f"gain_vs_{reference}"], summary["sd_gain"])
        within[summary["grouping"] == reference] = pd.NA
        summary["within_spread"] = within
    # Last, so that the columns before it keep their order.
    summary["n_diverged"] = summary.pop("n_diverged").astype(np.int64)
    return summary


def variant_task_changes(per_task: pd.DataFrame, baseline: str = "plain") -> pd.DataFrame:
    """Per (grouping, variant other than ``baseline``, task): grouping, variant, task,
    cluster, loss_weight, baseline_test_metric and test_metric (each the mean over training
    seeds), change (test_metric - baseline_test_metric: positive = the variant helped the
    task). Empty when ``baseline`` was not trained."""
    means = per_task.groupby(["grouping", "variant", "task"], as_index=False).agg(
        cluster=("cluster", "first"), loss_weight=("loss_weight", "mean"),
        test_metric=("test_metric", "mean"),
    )
    base = means[means["variant"] == baseline][["grouping", "task", "test_metric"]]
    base = base.rename(columns={"test_metric": "baseline_test_metric"})
    others = means[means["variant"] != baseline].merge(base, on=["grouping", "task"])
    others["change"] = others["test_metric"] - others["baseline_test_metric"]
    columns = [
        "grouping", "variant", "task", "cluster", "loss_weight", "baseline_test_metric",
        "test_metric", "change",
    ]
    return others[columns].sort_values(["grouping", "variant", "task"], ignore_index=True)


def variant_comparison(per_task: pd.DataFrame, baseline: str = "plain") -> pd.DataFrame:
    """Per (grouping, variant other than ``baseline``): grouping, variant, n_seeds,
    baseline_test_metric and mean_test_metric (means over seeds of the mean over tasks),
    change (mean over seeds of the paired per-seed difference: the same seeds start both
    trainings from the same initialization), sd_change (its spread across seeds),
    within_spread (|change| <= sd_change; NA with one seed), n_tasks_better and
    n_tasks_worse (tasks whose seed-averaged test metric rose or fell)."""
    seed_means = per_task.groupby(["grouping", "variant", "seed"])["test_metric"].mean()
    seed_means = seed_means.unstack("variant")
    changes = variant_task_changes(per_task, baseline)
    rows = []
    for (grouping, variant), tasks in changes.groupby(["grouping", "variant"], sort=True):
        pair = seed_means.loc[grouping, [baseline, variant]].dropna()
        paired = pair[variant] - pair[baseline]
        rows.append(
            {
                "grouping": grouping,
                "variant": variant,
                "n_seeds": int(len(pair)),
                "baseline_test_metric": float(pair[baseline].mean()),
                "mean_test_metric": float(pair[variant].mean()),
                "change": float(paired.mean()),
                "sd_change": _spread(paired),
                "n_tasks_better": int((tasks["change"] > 0).sum()),
                "n_tasks_worse": int((tasks["change"] < 0).sum()),
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        within = _within_spread(table["change"], table["sd_change"])
        table.insert(table.columns.get_loc("sd_change") + 1, "within_spread", within)
    return table


def run_decisions(
    dataset: pd.DataFrame, subsets: pd.DataFrame, estimator: str
) -> pd.DataFrame:
    """The run_decisions table of the report (schema
    :data:`taskgroup.data.tables.RUN_DECISIONS`): the preparation's rows (``dataset``,
    data/run_decisions.parquet), then the ``estimator``, the random design (``subsets``,
    the subsets table of subsets/random.parquet) and its pair coverage over the tasks kept:
    the subsets holding a pair, mean and minimum over the k (k - 1) / 2 pairs, and the pairs
    in none (those have no higher-order affinity)."""
    names = dataset.loc[dataset["item"] == "task", "value"].tolist()
    sizes = subsets.groupby("subset_id").size()
    counts = pair_counts(subsets, names)
    index = {name: i for i, name in enumerate(names)}
    upper = counts["task_i"].map(index) < counts["task_j"].map(index)
    covered = counts.loc[upper, "n_subsets"]
    design = "no subsets" if sizes.empty else (
        f"{len(sizes)} subsets of {'/'.join(str(s) for s in sorted(set(sizes)))} tasks"
    )
    rows = [("estimator", estimator), ("random_design", design)]
    if len(covered):
        rows += [
            ("pair_coverage_mean", f"{covered.mean():.3g}"),
            ("pair_coverage_min", str(int(covered.min()))),
            ("pairs_in_no_subset", f"{int((covered == 0).sum())} of {len(covered)}"),
        ]
    added = pd.DataFrame(rows, columns=["item", "value"])
    return pd.concat([dataset[["item", "value"]], added], ignore_index=True).astype(str)
