"""Which tasks to train together: one answer, chosen on validation rows no model saw.

Candidates: every clustered grouping, naive MTL (one model for all tasks) and STL (one model
per task). The planted groups and the random partitions are yardsticks, never answers.

**Selection statistic** (``recommendation.statistic``, :func:`selection_statistic`). Per
candidate and training seed, on the rows of split "val_select" (held out of every model's
fitting and early stopping, :mod:`taskgroup.models.holdout`); lower is better:

- ``metric``: the mean over tasks of 1 - M_t, M_t the task's configured metric
  (``evaluation.metric``) on its selection rows: the shortfall from a perfect score. Tasks
  whose metric is undefined there (one class for roc_auc) are left out, for every candidate
  alike. It judges the candidates by what the user measures, and one task moves it by at
  most 1 / k, because every such metric lies in [0, 1].
- ``loss``: the *pooled selection loss*, the mean loss over every selection row of every
  task, sum_t n_t L_t / sum_t n_t with L_t the task's mean loss (binary cross-entropy, or
  squared error in label units) and n_t its selection rows: the held-out value of the
  training objective. A task with a tiny or nearly constant selection set cannot dominate
  it the way it dominates a mean of per-task R^2 (whose denominator is that task's label
  variance).
- ``auto`` (the default): ``metric`` when every task's metric is bounded (accuracy,
  roc_auc, average_precision), ``loss`` when any task is judged by R^2. The cross-entropy
  is unbounded: a few confidently wrong rows can outweigh a better ranking of all the
  others, so a candidate of well-ranking but overconfident models (single-task models
  early-stopped on a handful of positives) loses on it while winning on the metric that
  the user configured.

**Rule.** Every candidate's paired per-seed difference to naive MTL, d_s = score_s(candidate)
- score_s(naive MTL) (the same seed gives the same initialization, so the pairing removes the
seed's share of the noise), has a mean and a spread (standard deviation over seeds, ddof 1).
A candidate with more groups than naive MTL is *eligible* only when it beats naive MTL by
more than ``margin`` spreads: -mean(d) > margin x sd(d); with one seed the spread is
undefined and no such candidate is eligible. It must also beat naive MTL across tasks
(:func:`with_task_test`): per task, the difference of its selection score to naive MTL's,
averaged over seeds; their mean, weighted as the statistic weighs tasks (equally, or by
selection rows for the pooled loss), must be below 0 by a one-sided t test over tasks
(k - 1 degrees of freedom) at family-wise level ``task_alpha``: the candidates are many
tests of one question, so the level is shared by Holm's step-down procedure over the
distinct partitions with more groups than naive MTL (:func:`holm_levels`; sources and
methods that find the same partition train the same models and count once). Three seeds
give a spread with 2 degrees of freedom, and the best of many clustered candidates that all
tie with naive MTL clears one such spread by chance; the tasks are the replicates that the
question "does grouping help these tasks" is about, and there are k of them; and without
the shared level the best of many candidates that tie with naive MTL also passes a test at
``task_alpha`` by chance (README "Verdicts on the example configs"). Naive MTL is always
eligible. Among the eligible candidates the one with the lowest mean selection score is
chosen (ties: fewer groups, then the candidate listed first: the primary grouping before
other sources). When the signal check below finds the higher-order affinity at its noise
level, the clustered groupings are not eligible: the choice is between naive MTL and STL, by
the same rule.

**Signal check** (:func:`signal_check`). Three measurements of whether the higher-order
affinity is above its own noise:

(a) split-half reliability (:func:`split_half_reliability`): the random subsets are split
    into two disjoint halves of equal size (seeded); each half gives a normalized
    higher-order affinity. Their correlation over the task pairs both halves cover is
    compared with its permutation null (the tasks of one half relabelled at random,
    :data:`PERMUTATIONS` times, as in a Mantel test); the adjusted Rand index of the two
    halves' clusters is reported next to it.
(b) cluster stability under a bootstrap of the subsets (:func:`bootstrap_stability`): the
    subsets are resampled with replacement ``bootstrap_draws`` times; each draw's
    normalized affinity is clustered with the same method and count as the full data, and
    the mean and standard deviation of the ARI to the full-data clusters are reported.
(c) the estimator's noise floor (:func:`noise_floor`, when the estimator validation ran):
    per task, the Spearman correlation across held-out subsets of two real fine-tunings
    with different seeds (real vs real), and of the estimate against the first of them.

**Held-out partition check** (:func:`taskgroup.group.clustering.choose_n_clusters` on
cross-fit folds of the subsets): for 1 .. max_clusters clusters, how well the clusters of
the other folds' affinity predict a held-out fold's. A split-half correlation can come from
structure that no grouping uses: a task that helps every partner reproduces across halves,
and the correlation test counts it. This check asks for *group* structure: when one cluster (the
overall mean) predicts the held-out folds as well as any partition (within one standard
error), there is none.

**Rule.** The affinity is *at its noise level* when (a) its split-half correlation is not
significant (p >= ``reliability_alpha``), or the held-out partition check chooses one
cluster, or (c) the real values do not reproduce across fine-tuning seeds: a one-sided sign
test of the per-task real-vs-real Spearman correlations against 0 (tasks with a defined
correlation) has p >= ``reliability_alpha``. (c) counts only when it can reject: the
validation ran and enough tasks lie in 3 held-out subsets for 0.5 ** tasks <
``reliability_alpha`` (:func:`noise_floor_testable`). (b) is reported, not ruled on: a
bootstrap draw shares about 63% of its subsets with the full data, so its ARI has no null
value of 0 and any threshold on it would be a guess. At noise level the clustered groupings
are not eligible: the choice is between naive MTL and STL, by the same rule as above.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from taskgroup.group.affinity import affinity_matrices
from taskgroup.group.clustering import (
    ClusteringSettings,
    cluster,
    fold_affinities,
    usable_folds,
)
from taskgroup.group.groupings import adjusted_rand_index
from taskgroup.report.validation import within_task_spearman

REFERENCE = "naive_mtl"
SINGLE_TASK = "stl"
# Relabellings of the permutation null: the smallest attainable p-value is 1 / 1000.
PERMUTATIONS = 999


# Metrics bounded in [0, 1] (taskgroup.models.metrics): one task moves their mean over k
# tasks by at most 1 / k. R^2 has no lower bound.
BOUNDED_METRICS = ("accuracy", "roc_auc", "average_precision")
STATISTICS = ("auto", "metric", "loss")


@dataclass(frozen=True)
class RecommendationSettings:
    """The config section ``recommendation`` without the selection split's fraction (that
    one acts in the final trainings): ``statistic`` (the selection statistic, one of
    :data:`STATISTICS`), ``margin`` (in paired seed spreads), ``task_alpha`` (level of the
    test over tasks), ``reliability_alpha`` (level of the signal check's tests),
    ``bootstrap_draws`` (of the cluster stability), ``seed`` (of the halves, the
    permutations and the bootstrap)."""

    statistic: str
    margin: float
    task_alpha: float
    reliability_alpha: float
    bootstrap_draws: int
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


def selection_statistic(statistic: str, metrics: list[str]) -> str:
    """The selection statistic in use, "metric" or "loss" (see the module docstring):
    ``statistic`` itself unless it is "auto", which gives "metric" when every entry of
    ``metrics`` (each task's resolved metric) is in :data:`BOUNDED_METRICS` and "loss"
    otherwise. Raises ValueError for a statistic not in :data:`STATISTICS`."""
    if statistic not in STATISTICS:
        raise ValueError(f"recommendation.statistic: {statistic!r}, expected one of "
                         f"{list(STATISTICS)}")
    if statistic != "auto":
        return statistic
    return "metric" if all(metric in BOUNDED_METRICS for metric in metrics) else "loss"


def selection_scores(per_task: pd.DataFrame, statistic: str) -> pd.DataFrame:
    """The rows of ``per_task`` (the per-task table of
    :func:`taskgroup.report.evaluation.per_task_table`) that count for ``statistic``
    ("metric" or "loss"), with selection_score (lower is better: 1 - val_select_metric, or
    val_select_loss) and selection_weight (the task's weight within a seed: 1, or its
    val_select_n). Rows without selection rows, and for "metric" rows whose metric is
    undefined (NaN), do not count."""
    counted = per_task[per_task["val_select_n"] > 0]
    if statistic == "metric":
        counted = counted[counted["val_select_metric"].notna()]
        return counted.assign(selection_score=1.0 - counted["val_select_metric"],
                              selection_weight=1.0)
    if statistic == "loss":
        return counted.assign(selection_score=counted["val_select_loss"],
                              selection_weight=counted["val_select_n"].astype(float))
    raise ValueError(f"selection statistic {statistic!r}: expected 'metric' or 'loss'")


def seed_selection_scores(per_task: pd.DataFrame, candidates: list[str], variant: str,
                          statistic: str) -> pd.DataFrame:
    """One row per (candidate, seed) of the final-training ``variant``: candidate, seed,
    n_groups, selection_score (the weighted mean of :func:`selection_scores` over tasks,
    see the module docstring), median_selection_metric, mean_test_metric,
    median_test_metric (over tasks).

    per_task: the per-task table of :func:`taskgroup.report.evaluation.per_task_table`.
    Raises ValueError naming a candidate without rows, or a seed where no task counts."""
    rows = []
    chosen = per_task[per_task["variant"] == variant]
    for name in candidates:
        table = chosen[chosen["grouping"] == name]
        if table.empty:
            raise ValueError(f"per-task table: no rows for grouping {name!r}, variant "
                             f"{variant!r}")
        n_groups = int(table["cluster"].nunique())
        for seed, rows_of_seed in table.groupby("seed"):
            counted = selection_scores(rows_of_seed, statistic)
            weights = counted["selection_weight"].to_numpy(dtype=float)
            if weights.sum() == 0:
                raise ValueError(f"grouping {name!r}, seed {seed}: no task has selection rows"
                                 f" with a defined {statistic}")
            rows.append({
                "candidate": name,
                "seed": int(seed),
                "n_groups": n_groups,
                "selection_score": float(
                    (counted["selection_score"].to_numpy() * weights).sum() / weights.sum()
                ),
                "median_selection_metric": float(rows_of_seed["val_select_metric"].median()),
                "mean_test_metric": float(rows_of_seed["test_metric"].mean()),
                "median_test_metric": float(rows_of_seed["test_metric"].median()),
            })
    return pd.DataFrame(rows)


def _spread(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def compare_with_reference(scores: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """One row per candidate of :func:`seed_selection_scores`, in its order: candidate,
    kind, n_groups, n_seeds, selection_score (mean over seeds), selection_sd (across seeds),
    difference (mean over seeds of candidate minus ``reference``, paired by seed; negative =
    the candidate is better), difference_sd (its spread across seeds; NaN with one seed),
    median_selection_metric, mean_test_metric, sd_test_metric, median_test_metric (means
    over seeds)."""
    base = scores[scores["candidate"] == reference].set_index("seed")["selection_score"]
    if base.empty:
        raise ValueError(f"the recommendation needs the {reference!r} grouping")
    rows = []
    for name, table in scores.groupby("candidate", sort=False):
        by_seed = table.set_index("seed")
        paired = (by_seed["selection_score"] - base).dropna()
        rows.append({
            "candidate": name,
            "kind": candidate_kind(name),
            "n_groups": int(by_seed["n_groups"].iloc[0]),
            "n_seeds": int(len(by_seed)),
            "selection_score": float(by_seed["selection_score"].mean()),
            "selection_sd": _spread(by_seed["selection_score"]),
            "difference": float(paired.mean()),
            "difference_sd": _spread(paired),
            "median_selection_metric": float(by_seed["median_selection_metric"].mean()),
            "mean_test_metric": float(by_seed["mean_test_metric"].mean()),
            "sd_test_metric": _spread(by_seed["mean_test_metric"]),
            "median_test_metric": float(by_seed["median_test_metric"].mean()),
        })
    return pd.DataFrame(rows)


def with_task_test(comparison: pd.DataFrame, per_task: pd.DataFrame, variant: str,
                   statistic: str, reference: str = REFERENCE) -> pd.DataFrame:
    """``comparison`` (:func:`compare_with_reference`) with task_difference (the mean over
    tasks, weighted by their selection_weight under ``statistic``
    (:func:`selection_scores`), of the task's selection score minus ``reference``'s, each
    averaged over the seeds both have; negative = better) and task_p (one-sided p-value of
    a t test over tasks that it is below 0, k - 1 degrees of freedom; 0 when every task
    gains the same, 1 when none gains or loses; NaN for the reference and with fewer than
    2 tasks)."""
    from scipy.stats import t as student_t

    chosen = selection_scores(per_task[per_task["variant"] == variant], statistic)
    scores = chosen.pivot_table(index=["task", "seed"], columns="grouping",
                                values="selection_score")
    task_weights = chosen.drop_duplicates("task").set_index("task")["selection_weight"]
    differences, p_values = [], []
    for name in comparison["candidate"]:
        per_task_difference = (scores[name] - scores[reference]).dropna().groupby("task").mean()
        weights = task_weights.loc[per_task_difference.index]
        weights = (weights / weights.sum()).to_numpy()
        values = per_task_difference.to_numpy()
        mean = float((weights * values).sum())
        differences.append(mean)
        if name == reference or len(values) < 2:
            p_values.append(float("nan"))
            continue
        # the weighted mean's standard error: the weighted variance (unbiased for
        # reliability weights) times sum(w^2)
        spread = (weights * (values - mean) ** 2).sum() / (1.0 - (weights**2).sum())
        error = float(np.sqrt(spread * (weights**2).sum()))
        if error == 0.0:
            p_values.append(0.0 if mean < 0 else 1.0)
        else:
            p_values.append(float(student_t.sf(-mean / error, len(values) - 1)))
    return comparison.assign(task_difference=differences, task_p=p_values)


def partitions(per_task: pd.DataFrame, candidates: list[str], variant: str) -> dict[str, int]:
    """A number per candidate of ``candidates``, equal for candidates that split the tasks
    the same way under ``variant`` (the same group keys: the same trained models),
    numbered in order of first appearance."""
    rows = per_task[per_task["variant"] == variant]
    numbers, keys = {}, {}
    for name in candidates:
        key = frozenset(rows.loc[rows["grouping"] == name, "group_key"].unique())
        numbers[name] = keys.setdefault(key, len(keys))
    return numbers


def holm_levels(p_values: pd.Series, family: pd.Series, alpha: float) -> pd.Series:
    """The level each test's p-value is compared with under Holm's step-down procedure at
    family-wise level ``alpha``: the distinct members of ``family`` (rows with the same
    family value are one hypothesis with one p-value) sorted by p, the i-th (from 0) of m
    is compared with alpha / (m - i), and once one fails (p not below its level) no later
    one is rejected (their level is 0). NaN p-values take no part (level NaN).
    Index and order of ``p_values``."""
    tested = pd.DataFrame({"p": p_values, "family": family}).dropna(subset=["p"])
    distinct = tested.drop_duplicates("family").sort_values("p", kind="stable")
    m, levels, failed = len(distinct), {}, False
    for i, (member, p) in enumerate(zip(distinct["family"], distinct["p"])):
        levels[member] = 0.0 if failed else alpha / (m - i)
        failed = failed or not p < levels[member]
    return tested["family"].map(levels).reindex(p_values.index)


def choose_candidate(comparison: pd.DataFrame, margin: float, task_alpha: float,
                     allowed_kinds: tuple[str, ...] = ("clustered", REFERENCE, SINGLE_TASK),
                     ) -> pd.DataFrame:
    """``comparison`` (:func:`with_task_test`) with the column task_level and three flags:
    beats_reference (-difference > margin x difference_sd and task_p below task_level, the
    Holm level (:func:`holm_levels`) at family-wise ``task_alpha`` over the distinct
    partitions, column ``partition`` (each candidate its own when absent), of the
    candidates with more groups than the reference; False where the spread is undefined),
    eligible
    (kind in ``allowed_kinds``, and either no more groups than the reference or
    beats_reference) and chosen (exactly one row: the eligible candidate with the lowest
    selection_score; ties go to fewer groups, then to the earlier row). Raises ValueError when no
    candidate is eligible (the reference is missing or not allowed)."""
    table = comparison.copy()
    reference_groups = int(table.loc[table["kind"] == REFERENCE, "n_groups"].min())
    spread = table["difference_sd"]
    family = table["partition"] if "partition" in table else pd.Series(
        range(len(table)), index=table.index
    )
    larger = table["n_groups"] > reference_groups
    table["task_level"] = holm_levels(table["task_p"].where(larger), family, task_alpha)
    table["beats_reference"] = (
        spread.notna() & (-table["difference"] > margin * spread.fillna(0.0))
        & (table["task_p"] < table["task_level"].fillna(0.0))
    ).astype(bool)
    table["eligible"] = table["kind"].isin(allowed_kinds) & (
        (table["n_groups"] <= reference_groups) | table["beats_reference"]
    )
    pool = table[table["eligible"]]
    if pool.empty:
        raise ValueError("no eligible candidate: the recommendation needs naive_mtl")
    # A stable sort: equal scores (e.g. the same partition from several methods) keep the
    # candidates' order, so the first listed (the primary grouping) wins the tie.
    best = pool.sort_values(["selection_score", "n_groups"], kind="stable").index[0]
    table["chosen"] = table.index == best
    return table


def off_diagonal_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """The correlation of two symmetric (k, k) matrices' entries above the diagonal (pairs
    NaN in either left out); NaN when fewer than 3 pairs remain or either side is
    constant."""
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
    (as :func:`taskgroup.group.affinity.value_matrix` gives them); m >= 4. The halves are
    the two folds of :func:`taskgroup.group.clustering.fold_affinities` (2 folds, ``seed``).
    Returns n_subsets_per_half (the smaller half's, floor(m / 2)), n_pairs (task pairs i < j
    that both halves cover), correlation (Pearson, over those pairs, of the two normalized
    affinities; NaN with fewer than 3 pairs or a constant half), p_value (one-sided, of the
    correlation against ``permutations`` relabellings of the second half's tasks, drawn from
    the generator seeded by ``seed``: (1 + #null >= observed) / (1 + permutations); 1 when
    the correlation is NaN) and ari (adjusted Rand index of the two halves' clusters with
    ``method`` under ``clustering``; "auto" is chosen on each half by the silhouette)."""
    m, k = membership.shape
    if m < 4:
        raise ValueError(f"split-half reliability needs at least 4 subsets, got {m}")
    (second, first), _ = fold_affinities(membership, losses, 2, seed)
    rng = np.random.default_rng(seed)
    upper = np.triu_indices(k, k=1)
    n_pairs = int((np.isfinite(first[upper]) & np.isfinite(second[upper])).sum())
    observed = off_diagonal_correlation(first, second)
    if np.isnan(observed):
        p_value = 1.0
    else:
        exceed = 0
        for _ in range(permutations):
            relabel = rng.permutation(k)
            null = off_diagonal_correlation(first, second[np.ix_(relabel, relabel)])
            exceed += bool(np.isfinite(null) and null >= observed)
        p_value = (1 + exceed) / (1 + permutations)
    labels = [cluster(matrix, method, clustering).labels for matrix in (first, second)]
    return {
        "n_subsets_per_half": int(m // 2),
        "n_pairs": n_pairs,
        "correlation": observed,
        "p_value": float(p_value),
        "ari": float(adjusted_rand_index(labels[0], labels[1])),
    }


def bootstrap_stability(
    membership: np.ndarray, losses: np.ndarray, reference: np.ndarray, method: str,
    clustering: ClusteringSettings, draws: int, seed: int,
) -> dict:
    """Stability of the full-data clusters ``reference`` ((k,) labels) under a bootstrap of
    the subsets: ``draws`` times, m subsets are drawn with replacement (generator seeded by
    ``seed``), their normalized affinity is clustered with ``method`` under ``clustering``
    with n_clusters set to the reference's count, and compared with ``reference`` by the
    adjusted Rand index. Returns bootstrap_draws, bootstrap_ari_mean and bootstrap_ari_sd
    (ddof 1; NaN with one draw); both NaN when the reference has a single cluster (every
    draw would agree trivially). Raises ValueError for draws < 1."""
    if draws < 1:
        raise ValueError(f"recommendation.bootstrap_draws = {draws}; expected >= 1")
    count = int(np.unique(reference).size)
    result = {"bootstrap_draws": int(draws), "bootstrap_ari_mean": float("nan"),
              "bootstrap_ari_sd": float("nan")}
    if count == 1:
        return result
    rng = np.random.default_rng(seed)
    fixed = replace(clustering, n_clusters=count)
    m = membership.shape[0]
    scores = []
    for _ in range(draws):
        drawn = rng.integers(0, m, size=m)
        _, normalized, _ = affinity_matrices(membership[drawn], losses[drawn])
        scores.append(adjusted_rand_index(reference, cluster(normalized, method, fixed).labels))
    result["bootstrap_ari_mean"] = float(np.mean(scores))
    result["bootstrap_ari_sd"] = float(np.std(scores, ddof=1)) if draws > 1 else float("nan")
    return result


# The estimator names of the validation's per-subset table (taskgroup.stages.validate):
# a second real fine-tuning (the noise floor) and the gradient estimate.
REAL_AGAIN = "finetune_other_seed"
ESTIMATE = "gradient"


def _within_task_spearman(rows: pd.DataFrame) -> pd.Series:
    """Per task, :func:`taskgroup.report.validation.within_task_spearman` of the rows' loss
    against their loss_reference. It ranks changes from the meta-initialization's loss, a
    constant per task, so a zero baseline gives the same ranks."""
    estimate = rows[["subset_id", "task", "loss"]]
    reference = rows[["subset_id", "task", "loss_reference"]].rename(
        columns={"loss_reference": "loss"})
    baseline = pd.Series(0.0, index=pd.unique(rows["task"]))
    return within_task_spearman(estimate, reference, baseline)


def noise_floor(per_subset: pd.DataFrame | None) -> dict:
    """The estimator's noise floor from the validation's per-subset table (estimator,
    subset_id, task, loss, loss_reference: each estimate of a held-out subset's loss
    against one real fine-tuning), or None when the validation did not run.

    Per task, the Spearman correlation across the held-out subsets that hold it (NaN below
    3 subsets or for constant losses; a rank correlation, so the same as the correlation of
    the changes from the meta-initialization) of a second real fine-tuning (REAL_AGAIN)
    against the first, and of the estimate (ESTIMATE) against it. Returns noise_floor_tasks
    (tasks with a defined real-vs-real correlation), noise_floor_spearman and
    estimator_spearman (medians over tasks; NaN when unmeasured), noise_floor_p_value
    (one-sided sign test: is the real-vs-real correlation positive in more tasks than chance,
    ties at 0 left out; NaN when no task has a nonzero correlation)."""
    result = {"noise_floor_tasks": 0, "noise_floor_spearman": float("nan"),
              "estimator_spearman": float("nan"), "noise_floor_p_value": float("nan")}
    if per_subset is None:
        return result
    real = _within_task_spearman(per_subset[per_subset["estimator"] == REAL_AGAIN]).dropna()
    estimate = _within_task_spearman(per_subset[per_subset["estimator"] == ESTIMATE]).dropna()
    result["noise_floor_tasks"] = int(len(real))
    if len(real):
        result["noise_floor_spearman"] = float(real.median())
    if len(estimate):
        result["estimator_spearman"] = float(estimate.median())
    signs = real[real != 0]
    if len(signs):
        from scipy.stats import binomtest  # here: scipy.stats is slow to import

        result["noise_floor_p_value"] = float(
            binomtest(int((signs > 0).sum()), len(signs), 0.5, alternative="greater").pvalue
        )
    return result


def noise_floor_testable(n_tasks: int, alpha: float) -> bool:
    """Whether the noise floor's sign test over ``n_tasks`` tasks can reject at ``alpha``:
    its smallest p-value, every task positive, is 0.5 ** n_tasks (e.g. at least 5 tasks
    for 0.05). With fewer, a perfect agreement would still read as noise."""
    return n_tasks > 0 and 0.5**n_tasks < alpha


def signal_check(
    membership: np.ndarray, losses: np.ndarray, method: str, clustering: ClusteringSettings,
    folds: int, settings: RecommendationSettings, per_subset: pd.DataFrame | None,
) -> dict:
    """The signal check of the module docstring, one row of the signal table.

    membership (m, k), losses (m, k): the random design's subsets and validation losses;
    ``method``/``clustering``: the clusters checked; ``folds``: the cross-fit folds of the
    held-out partition check (clustering.auto_folds, through
    :func:`taskgroup.group.clustering.usable_folds`); per_subset: the validation's
    per-subset table or None. Returns (a) split_half_reliability's figures; the held-out
    partition check (:func:`taskgroup.group.clustering.choose_n_clusters` on ``folds``
    folds of the subsets, counts 1 .. max_clusters): held_out_count and held_out_score
    (the held-out block error at that count, relative to one cluster's); n_clusters (of the
    full-data clusters: the held-out count under "auto", else the configured one); (b)
    bootstrap_stability's; (c) noise_floor's; and alpha, split_half_noise,
    partition_noise (held_out_count is 1), noise_floor_noise (each part's verdict: True =
    at noise level; False when (c) cannot reject, :func:`noise_floor_testable`) and
    above_noise (none of the three)."""
    alpha = settings.reliability_alpha
    row = split_half_reliability(membership, losses, method, clustering, settings.seed)
    _, full, _ = affinity_matrices(membership, losses)
    held_out = cluster(
        full, method, replace(clustering, n_clusters="auto"),
        fold_affinities(membership, losses, usable_folds(folds, membership.shape[0]),
                        clustering.seed),
    )
    row["held_out_count"] = int(held_out.n_clusters)
    row["held_out_score"] = float(
        held_out.scan.loc[held_out.scan["n_clusters"] == held_out.n_clusters, "score"].iloc[0]
    ) if not held_out.scan.empty else 1.0
    reference = (held_out.labels if clustering.n_clusters == "auto"
                 else cluster(full, method, clustering).labels)
    row["n_clusters"] = int(np.unique(reference).size)
    row.update(bootstrap_stability(membership, losses, reference, method, clustering,
                                   settings.bootstrap_draws, settings.seed))
    row.update(noise_floor(per_subset))
    row["alpha"] = float(alpha)
    row["split_half_noise"] = bool(row["p_value"] >= alpha)
    row["partition_noise"] = bool(row["held_out_count"] == 1)
    row["noise_floor_noise"] = bool(
        noise_floor_testable(row["noise_floor_tasks"], alpha)
        and row["noise_floor_p_value"] >= alpha
    )
    row["above_noise"] = not (
        row["split_half_noise"] or row["partition_noise"] or row["noise_floor_noise"]
    )
    return row


def recommended_groups(per_task: pd.DataFrame, candidate: str, variant: str,
                       task_names: list[str]) -> pd.DataFrame:
    """The groups of ``candidate`` under the final-training ``variant`` (task, group,
    group_key: what to train), one row per task of ``task_names`` in that order. Raises
    ValueError naming the tasks the per-task table lacks for it."""
    rows = per_task[(per_task["grouping"] == candidate) & (per_task["variant"] == variant)]
    groups = rows.drop_duplicates("task").set_index("task")
    missing = [name for name in task_names if name not in groups.index]
    if missing:
        raise ValueError(f"per-task table: grouping {candidate!r}, variant {variant!r} has no "
                         f"rows for tasks {missing[:5]}")
    groups = groups.loc[task_names]
    return pd.DataFrame({
        "task": task_names,
        "group": groups["cluster"].to_numpy(dtype="int64"),
        "group_key": groups["group_key"].to_numpy(dtype=object),
    })


def recommendation(
    per_task: pd.DataFrame, candidates: list[str], variant: str, task_names: list[str],
    statistic: str, margin: float, task_alpha: float, above_noise: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The answer: (verdict, groups). verdict: :func:`choose_candidate` on the selection
    scores under ``statistic`` ("metric" or "loss", :func:`selection_statistic`) of
    ``candidates`` under ``variant``, clustered groupings allowed only when the signal is
    ``above_noise``, with a column statistic; groups: :func:`recommended_groups` of the
    chosen candidate."""
    allowed = ("clustered", REFERENCE, SINGLE_TASK) if above_noise else (REFERENCE, SINGLE_TASK)
    comparison = with_task_test(
        compare_with_reference(seed_selection_scores(per_task, candidates, variant, statistic)),
        per_task, variant, statistic,
    )
    comparison["partition"] = comparison["candidate"].map(
        partitions(per_task, candidates, variant)
    )
    verdict = choose_candidate(comparison, margin, task_alpha, allowed).assign(
        statistic=statistic)
    chosen = verdict.loc[verdict["chosen"], "candidate"].iloc[0]
    return verdict, recommended_groups(per_task, chosen, variant, task_names)


def per_task_choice(per_task: pd.DataFrame, verdict: pd.DataFrame, variant: str,
                    statistic: str) -> pd.DataFrame:
    """Per task, the best of its own models on the selection rows: the model of its group in
    the chosen answer, in naive MTL and in STL (those of the three in ``verdict``,
    :func:`recommendation`'s table). Reported next to the recommendation, never instead of
    it: picking the lowest of three noisy scores per task favours the luckiest, and the
    test columns measure by how much.

    One row per task with a defined selection score under ``statistic``: task, choice (the
    candidate whose model has the lowest selection score averaged over seeds; ties go to
    the answer, then naive MTL, then STL), selection_score, answer_selection_score (the
    answer's), test_metric, answer_test_metric (means over seeds; the test took no part)."""
    answer = verdict.loc[verdict["chosen"], "candidate"].iloc[0]
    options = list(dict.fromkeys(
        [answer] + [name for name in (REFERENCE, SINGLE_TASK)
                    if name in set(verdict["candidate"])]
    ))
    scored = selection_scores(per_task[per_task["variant"] == variant], statistic)
    scored = scored[scored["grouping"].isin(options)]
    score = scored.pivot_table(index="task", columns="grouping", values="selection_score")
    test = per_task[(per_task["variant"] == variant) & per_task["grouping"].isin(options)]
    test = test.pivot_table(index="task", columns="grouping", values="test_metric")
    score = score[[name for name in options if name in score.columns]].dropna()
    choice = score.idxmin(axis=1)  # first of equal minima: the options' order
    return pd.DataFrame({
        "task": score.index.to_numpy(dtype=object),
        "choice": choice.to_numpy(dtype=object),
        "selection_score": score.min(axis=1).to_numpy(),
        "answer_selection_score": score[answer].to_numpy(),
        "test_metric": [test.at[task, name] for task, name in choice.items()],
        "answer_test_metric": test.loc[score.index, answer].to_numpy(),
    })


def per_task_choice_lines(choice: pd.DataFrame, statistic: str) -> list[str]:
    """:func:`per_task_choice` in plain Markdown lines: how many tasks would switch, the
    gain they show on the selection rows and the gain they keep on test."""
    moved = choice["selection_score"] < choice["answer_selection_score"]
    selection_gain = float((choice["answer_selection_score"] - choice["selection_score"]).mean())
    test_gain = float((choice["test_metric"] - choice["answer_test_metric"]).mean())
    unit = "1 - metric" if statistic == "metric" else "loss"
    return [
        f"Per-task choice (reported, not recommended): {int(moved.sum())} of {len(choice)} "
        f"tasks do better on their selection rows with another of their own models "
        f"(naive MTL's or STL's), by {selection_gain:.4f} in {unit} averaged over all tasks; "
        f"on test the per-task choice changes the mean metric by {test_gain:+.4f}. A "
        "selection gain that does not carry over to test is the choice over-fitting the "
        "selection rows.",
    ]


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


def signal_lines(signal: dict, alpha: float) -> list[str]:
    """The signal check (:func:`signal_check`'s row) in plain Markdown lines: the verdict
    first, then (a), (b) and (c)."""
    if signal["above_noise"]:
        head = ("**Signal check: the higher-order affinity is above its noise**; its clusters "
                "took part in the choice.")
    else:
        reasons = [text for flag, text in (
            ("split_half_noise", "its two halves do not agree beyond chance"),
            ("partition_noise", "no partition of the tasks predicts held-out subsets"),
            ("noise_floor_noise", "real fine-tunings are not shown to reproduce their values"),
        ) if signal[flag]]
        head = ("**Signal check: the higher-order affinity is at its noise level: there is no "
                f"task structure to trust** ({'; '.join(reasons)}). Its clusters took no part "
                "in the choice, which was between naive MTL and STL only.")
    split = "not " if signal["split_half_noise"] else ""
    lines = [head, "",
             f"- (a) Split-half reliability: the affinities of two disjoint halves of the "
             f"subsets ({signal['n_subsets_per_half']} each) correlate at "
             f"{signal['correlation']:.3f} over {signal['n_pairs']} task pairs (permutation "
             f"p = {signal['p_value']:.3f}: {split}significant at {alpha:g}); ARI of the "
             f"halves' clusters {signal['ari']:.2f}."]
    if signal["partition_noise"]:
        lines.append("- Held-out partitions: no partition of the tasks predicts held-out "
                     "subsets' affinity better than no partition (one cluster chosen).")
    else:
        lines.append(
            f"- Held-out partitions: {signal['held_out_count']} clusters of the other folds "
            f"predict a held-out fold's affinity best, leaving "
            f"{signal['held_out_score']:.0%} of one cluster's error."
        )
    if np.isfinite(signal["bootstrap_ari_mean"]):
        lines.append(
            f"- (b) Cluster stability: over {signal['bootstrap_draws']} bootstrap draws of "
            f"the subsets, the {signal['n_clusters']} clusters are found again with ARI "
            f"{signal['bootstrap_ari_mean']:.2f} +- {signal['bootstrap_ari_sd']:.2f} (mean +- "
            "sd; 1 = always the same clusters; reported, not ruled on)."
        )
    else:
        lines.append("- (b) Cluster stability: the full data give a single cluster; nothing "
                     "to resample.")
    if signal["noise_floor_tasks"] == 0:
        lines.append("- (c) Noise floor: not measured (no estimator validation, or no task in "
                     "3 of its held-out subsets: raise validation.n_subsets).")
    else:
        p_value = signal["noise_floor_p_value"]
        if not noise_floor_testable(signal["noise_floor_tasks"], alpha):
            repro = ("cannot be tested on so few tasks (not ruled on; raise "
                     "validation.n_subsets)")
        elif signal["noise_floor_noise"]:
            repro = f"are not shown to reproduce (sign test p = {p_value:.3f} >= {alpha:g})"
        else:
            repro = f"reproduce (sign test p = {p_value:.3g})"
        lines.append(
            f"- (c) Noise floor: two real fine-tunings with different seeds agree on the "
            f"order of a task's subsets with median Spearman {signal['noise_floor_spearman']:.2f}"
            f" over {signal['noise_floor_tasks']} tasks, so the real values {repro}; the "
            f"estimate agrees with real fine-tuning at {signal['estimator_spearman']:.2f}."
        )
    return lines


def verdict_markdown(table: pd.DataFrame, signal: dict, alpha: float, margin: float,
                     task_alpha: float, metric: str, choice: pd.DataFrame) -> str:
    """The verdict as a few plain Markdown lines: the answer, the selection evidence with its
    spread, the signal check, the test metric (``metric``, evaluation.metric) of the
    answer next to naive MTL's and STL's, and the per-task choice (``choice``,
    :func:`per_task_choice`). ``table``: :func:`recommendation`'s verdict (with
    its statistic column); ``signal``: :func:`signal_check`'s row."""
    chosen = table[table["chosen"]].iloc[0]
    rows = table.set_index("candidate")
    lines = ["# Recommendation", "", f"**{answer_sentence(chosen)}**", ""]
    n_seeds = int(chosen["n_seeds"])
    named = "accuracy (binary) or R^2 (regression)" if metric == "auto" else metric
    if chosen["statistic"] == "metric":
        column = f"1 - {'accuracy' if metric == 'auto' else metric}"
        # "auto" resolves to the metric statistic only when every task is binary: accuracy
        statistic = (f"{column}, averaged over tasks (the shortfall from a perfect "
                     "score; every task weighs the same)")
    else:
        statistic = ("the pooled loss (the mean loss over every task's selection rows: "
                     "cross-entropy for binary tasks, squared error for regression)")
        column = "pooled loss"
    reference_groups = int(table.loc[table["kind"] == REFERENCE, "n_groups"].min())
    tested = (table["n_groups"] > reference_groups) & table["task_p"].notna()
    n_family = table.loc[tested, "partition"].nunique()
    lines.append(
        f"Chosen on the validation rows held out of every model's early stopping, by "
        f"{statistic}; lower is better; over {n_seeds} training seed(s). A candidate "
        f"with more groups than naive MTL had to beat it by more than {margin:g} x the "
        f"paired seed spread, and across tasks (one-sided t test over the tasks at "
        f"family-wise level {task_alpha:g}, shared by Holm's step-down over the "
        f"{n_family} distinct partitions with more groups than naive MTL; a level of 0: "
        f"a partition of smaller p already failed its level)."
    )
    if n_seeds < 2:
        lines.append("With one training seed there is no spread: no grouping can be shown "
                     "to beat naive MTL (set evaluation.n_seeds >= 2).")
    lines += ["", f"| candidate | groups | {column} | vs naive MTL (paired) "
                  "| over tasks (p) | eligible |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, row in rows.iterrows():
        mark = " (chosen)" if row["chosen"] else ""
        level = "" if np.isnan(row["task_level"]) else f"; level {row['task_level']:.2g}"
        lines.append(
            f"| {name}{mark} | {row['n_groups']} | {row['selection_score']:.4f} "
            f"+- {row['selection_sd']:.4f} | {row['difference']:+.4f} +- "
            f"{row['difference_sd']:.4f} | {row['task_difference']:+.4f} "
            f"({row['task_p']:.2g}{level}) | {'yes' if row['eligible'] else 'no'} |"
        )
    lines.append("")
    lines += signal_lines(signal, alpha)
    lines.append("")
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
    lines += [""] + per_task_choice_lines(choice, chosen["statistic"])
    return "\n".join(lines) + "\n"
