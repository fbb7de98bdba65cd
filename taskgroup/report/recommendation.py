"""Which tasks to train together: one answer, chosen on validation rows no model saw.

Candidates: every clustered grouping, naive MTL (one model for all tasks) and STL (one model
per task). The planted groups and the random partitions are yardsticks, never answers.

**Selection statistic.** Per candidate and training seed, the *pooled selection loss*: the
mean loss over every selection row of every task (the rows of split "val_select", held out of
every model's fitting and early stopping, :mod:`taskgroup.models.holdout`), that is
sum_t n_t L_t / sum_t n_t with L_t the task's mean loss (binary cross-entropy, or squared
error in label units) and n_t its selection rows. It is the held-out value of the training
objective: a task weighs by its rows, and a task with a tiny or nearly constant selection set
cannot dominate it the way it dominates a mean of per-task R^2 (whose denominator is that
task's label variance). Lower is better.

**Rule.** Every candidate's paired per-seed difference to naive MTL, d_s = loss_s(candidate)
- loss_s(naive MTL) (the same seed gives the same initialization, so the pairing removes the
seed's share of the noise), has a mean and a spread (standard deviation over seeds, ddof 1).
A candidate with more groups than naive MTL is *eligible* only when it beats naive MTL by
more than ``margin`` spreads: -mean(d) > margin x sd(d); with one seed the spread is
undefined and no such candidate is eligible. Naive MTL is always eligible. Among the
eligible candidates the one with the lowest mean selection loss is chosen (ties: fewer
groups, then the candidate listed first: the primary grouping before other sources). When
the signal check below finds the higher-order affinity at its noise level, the clustered
groupings are not eligible: the choice is between naive MTL and STL, by the same rule.

**Signal check** (:func:`split_half_reliability`). The random subsets are split into two
disjoint halves of equal size (seeded); each half gives a normalized higher-order affinity.
Their correlation over the task pairs both halves cover is compared with its permutation
null (the tasks of one half relabelled at random, :data:`PERMUTATIONS` times, as in a Mantel
test): the affinity is above its noise when the one-sided p-value is below
``reliability_alpha``. The adjusted Rand index of the two halves' clusters is reported next
to it (not used by the rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from taskgroup.group.affinity import affinity_matrices
from taskgroup.group.clustering import ClusteringSettings, cluster

REFERENCE = "naive_mtl"
SINGLE_TASK = "stl"
# Relabellings of the permutation null: the smallest attainable p-value is 1 / 1000.
PERMUTATIONS = 999


@dataclass(frozen=True)
class RecommendationSettings:
    """The config section ``recommendation`` without the selection split's fraction (that
    one acts in the final trainings): ``margin`` (in paired seed spreads),
    ``reliability_alpha`` (level of the signal check), ``seed`` (of the halves and of the
    permutations)."""

    margin: float
    reliability_alpha: float
    seed: int


def candidate_kind(name: str) -> str:
    """"naive_mtl", "stl" or "clustered" (a "<source>-<method>" grouping); ValueError for
    a name that is no candidate (planted, random partitions)."""
    if name in (REFERENCE, SINGLE_TASK):
        return name
    if "-" in name:
        return "clustered"
    raise ValueError(
        f"grouping {name!r} is not a candidate of the recommendation: expected a clustered "
        f"grouping ('<source>-<method>'), {REFERENCE!r} or {SINGLE_TASK!r}"
    )


def pooled_selection_losses(per_task: pd.DataFrame, candidates: list[str],
                            variant: str) -> pd.DataFrame:
    """One row per (candidate, seed) of the final-training ``variant``: candidate, seed,
    n_groups, selection_loss (pooled over every task's selection rows, see the module
    docstring), median_selection_metric, mean_test_metric, median_test_metric (over tasks).

    per_task: the per-task table of :func:`taskgroup.report.evaluation.per_task_table`.
    Raises ValueError naming a candidate without rows, or a seed without selection rows."""
    rows = []
    chosen = per_task[per_task["variant"] == variant]
    for name in candidates:
        table = chosen[chosen["grouping"] == name]
        if table.empty:
            raise ValueError(f"per-task table: no rows for grouping {name!r}, variant "
                             f"{variant!r}")
        n_groups = int(table["cluster"].nunique())
        for seed, rows_of_seed in table.groupby("seed"):
            counted = rows_of_seed[rows_of_seed["val_select_n"] > 0]
            weights = counted["val_select_n"].to_numpy(dtype=float)
            if weights.sum() == 0:
                raise ValueError(f"grouping {name!r}, seed {seed}: no selection rows")
            rows.append({
                "candidate": name,
                "seed": int(seed),
                "n_groups": n_groups,
                "selection_loss": float(
                    (counted["val_select_loss"].to_numpy() * weights).sum() / weights.sum()
                ),
                "median_selection_metric": float(rows_of_seed["val_select_metric"].median()),
                "mean_test_metric": float(rows_of_seed["test_metric"].mean()),
                "median_test_metric": float(rows_of_seed["test_metric"].median()),
            })
    return pd.DataFrame(rows)


def _spread(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def compare_with_reference(losses: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """One row per candidate of :func:`pooled_selection_losses`, in its order: candidate,
    kind, n_groups, n_seeds, selection_loss (mean over seeds), selection_sd (across seeds),
    difference (mean over seeds of candidate minus ``reference``, paired by seed; negative =
    the candidate is better), difference_sd (its spread across seeds; NaN with one seed),
    median_selection_metric, mean_test_metric, sd_test_metric, median_test_metric (means
    over seeds)."""
    base = losses[losses["candidate"] == reference].set_index("seed")["selection_loss"]
    if base.empty:
        raise ValueError(f"the recommendation needs the {reference!r} grouping")
    rows = []
    for name, table in losses.groupby("candidate", sort=False):
        by_seed = table.set_index("seed")
        paired = (by_seed["selection_loss"] - base).dropna()
        rows.append({
            "candidate": name,
            "kind": candidate_kind(name),
            "n_groups": int(by_seed["n_groups"].iloc[0]),
            "n_seeds": int(len(by_seed)),
            "selection_loss": float(by_seed["selection_loss"].mean()),
            "selection_sd": _spread(by_seed["selection_loss"]),
            "difference": float(paired.mean()),
            "difference_sd": _spread(paired),
            "median_selection_metric": float(by_seed["median_selection_metric"].mean()),
            "mean_test_metric": float(by_seed["mean_test_metric"].mean()),
            "sd_test_metric": _spread(by_seed["mean_test_metric"]),
            "median_test_metric": float(by_seed["median_test_metric"].mean()),
        })
    return pd.DataFrame(rows)


def choose_candidate(comparison: pd.DataFrame, margin: float,
                     allowed_kinds: tuple[str, ...] = ("clustered", REFERENCE, SINGLE_TASK),
                     ) -> pd.DataFrame:
    """``comparison`` (:func:`compare_with_reference`) with three flags: beats_reference
    (-difference > margin x difference_sd; False where the spread is undefined), eligible
    (kind in ``allowed_kinds``, and either no more groups than the reference or
    beats_reference) and chosen (exactly one row: the eligible candidate with the lowest
    selection_loss; ties go to fewer groups, then to the earlier row). Raises ValueError when no
    candidate is eligible (the reference is missing or not allowed)."""
    table = comparison.copy()
    reference_groups = int(table.loc[table["kind"] == REFERENCE, "n_groups"].min())
    spread = table["difference_sd"]
    table["beats_reference"] = (
        spread.notna() & (-table["difference"] > margin * spread.fillna(0.0))
    ).astype(bool)
    table["eligible"] = table["kind"].isin(allowed_kinds) & (
        (table["n_groups"] <= reference_groups) | table["beats_reference"]
    )
    pool = table[table["eligible"]]
    if pool.empty:
        raise ValueError("no eligible candidate: the recommendation needs naive_mtl")
    # A stable sort: equal losses (e.g. the same partition from several methods) keep the
    # candidates' order, so the first listed (the primary grouping) wins the tie.
    best = pool.sort_values(["selection_loss", "n_groups"], kind="stable").index[0]
    table["chosen"] = table.index == best
    return table


def _off_diagonal_correlation(first: np.ndarray, second: np.ndarray) -> float:
    upper = np.triu_indices(len(first), k=1)
    a, b = first[upper], second[upper]
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def split_half_reliability(
    membership: np.ndarray, losses: np.ndarray, method: str, clustering: ClusteringSettings,
    seed: int, permutations: int = PERMUTATIONS,
) -> dict:
    """How well the normalized higher-order affinity reproduces across two disjoint halves
    of the subsets.

    membership (m, k) bool, losses (m, k): the random design's subsets and validation losses
    (as :func:`taskgroup.group.affinity.value_matrix` gives them); m >= 4. The subsets are
    shuffled (seeded by ``seed``) and cut into two halves of floor(m / 2) (an odd one left
    out). Returns n_subsets_per_half, n_pairs (task pairs i < j that both halves cover),
    correlation (Pearson, over those pairs, of the two normalized affinities; NaN with fewer
    than 3 pairs or a constant half), p_value (one-sided, of the correlation against
    ``permutations`` relabellings of the second half's tasks: (1 + #null >= observed) /
    (1 + permutations); 1 when the correlation is NaN) and ari (adjusted Rand index of the
    two halves' clusters with ``method`` under ``clustering``)."""
    m, k = membership.shape
    if m < 4:
        raise ValueError(f"split-half reliability needs at least 4 subsets, got {m}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(m)
    half = m // 2
    _, first, _ = affinity_matrices(membership[order[:half]], losses[order[:half]])
    _, second, _ = affinity_matrices(
        membership[order[half : 2 * half]], losses[order[half : 2 * half]]
    )
    upper = np.triu_indices(k, k=1)
    n_pairs = int((np.isfinite(first[upper]) & np.isfinite(second[upper])).sum())
    observed = _off_diagonal_correlation(first, second)
    if np.isnan(observed):
        p_value = 1.0
    else:
        exceed = 0
        for _ in range(permutations):
            relabel = rng.permutation(k)
            null = _off_diagonal_correlation(first, second[np.ix_(relabel, relabel)])
            exceed += bool(np.isfinite(null) and null >= observed)
        p_value = (1 + exceed) / (1 + permutations)
    labels = [cluster(matrix, method, clustering).labels for matrix in (first, second)]
    return {
        "n_subsets_per_half": int(half),
        "n_pairs": n_pairs,
        "correlation": observed,
        "p_value": float(p_value),
        "ari": float(adjusted_rand_score(labels[0], labels[1])),
    }


def answer_sentence(chosen: pd.Series) -> str:
    """The verdict in words: train all tasks together / each task alone / these N groups."""
    if chosen["kind"] == REFERENCE:
        return "Train all tasks together (one model: naive MTL)."
    if chosen["kind"] == SINGLE_TASK:
        return f"Train each task alone ({chosen['n_groups']} single-task models: STL)."
    return (
        f"Train these {chosen['n_groups']} groups (grouping {chosen['candidate']}; "
        "groups.parquet lists them)."
    )


def verdict_markdown(table: pd.DataFrame, signal: dict, alpha: float, margin: float,
                     metric: str) -> str:
    """The verdict as a few plain Markdown lines: the answer, the selection evidence with its
    spread, the signal check, and the test metric (``metric``, evaluation.metric) of the
    answer next to naive MTL's and STL's. ``table``: :func:`choose_candidate`'s output;
    ``signal``: :func:`split_half_reliability`'s, with above_noise added."""
    chosen = table[table["chosen"]].iloc[0]
    rows = table.set_index("candidate")
    lines = ["# Recommendation", "", f"**{answer_sentence(chosen)}**", ""]
    n_seeds = int(chosen["n_seeds"])
    lines.append(
        f"Chosen on the pooled loss over the validation rows held out of every model's "
        f"early stopping (lower is better), over {n_seeds} training seed(s); a candidate "
        f"with more groups than naive MTL had to beat it by more than {margin:g} x the "
        "paired seed spread."
    )
    if n_seeds < 2:
        lines.append("With one training seed there is no spread: no grouping can be shown "
                     "to beat naive MTL (set evaluation.n_seeds >= 2).")
    lines += ["", "| candidate | groups | selection loss | vs naive MTL (paired) | eligible |",
              "| --- | --- | --- | --- | --- |"]
    for name, row in rows.iterrows():
        mark = " (chosen)" if row["chosen"] else ""
        lines.append(
            f"| {name}{mark} | {row['n_groups']} | {row['selection_loss']:.4f} "
            f"+- {row['selection_sd']:.4f} | {row['difference']:+.4f} +- "
            f"{row['difference_sd']:.4f} | {'yes' if row['eligible'] else 'no'} |"
        )
    lines.append("")
    if signal["above_noise"]:
        lines.append(
            f"Signal check: the higher-order affinity reproduces across two disjoint halves "
            f"of the subsets (correlation {signal['correlation']:.3f}, permutation p = "
            f"{signal['p_value']:.3f} < {alpha:g}; ARI of their clusters "
            f"{signal['ari']:.2f})."
        )
    else:
        lines.append(
            f"Signal check: the higher-order affinity is at its noise level (split-half "
            f"correlation {signal['correlation']:.3f}, permutation p = {signal['p_value']:.3f}"
            f" >= {alpha:g}; ARI of the halves' clusters {signal['ari']:.2f}): its clusters "
            "are not trusted, and the choice was between naive MTL and STL only."
        )
    named = "accuracy (binary) or R^2 (regression)" if metric == "auto" else metric
    lines += ["", f"Test check (mean {named} over tasks, mean +- sd over seeds; not used "
              "for the choice):"]
    shown = [chosen["candidate"]] + [
        name for name in (REFERENCE, SINGLE_TASK)
        if name in rows.index and name != chosen["candidate"]
    ]
    for name in shown:
        row = rows.loc[name]
        lines.append(f"- {name}: {row['mean_test_metric']:.4f} +- {row['sd_test_metric']:.4f}"
                     f" (median over tasks {row['median_test_metric']:.4f})")
    return "\n".join(lines) + "\n"
