"""Linear surrogate models of per-subset losses and negative-transfer scoring (TMLR 2023).

For each target task i, the surrogate predicts the target's validation loss after training on
a subset S that contains i, from the other tasks that S holds:

    f_i(S) ~ b_i + sum_{j in S, j != i} theta_ij,

fitted by ridge regression (strength ``SurrogateSettings.alpha``, intercept not penalized) on
0/1 indicators of the other tasks over the sampled subsets that contain i. Losses are "lower is
better", so theta_ij is in loss units (nats of mean binary cross-entropy for the workflow's
tables) per included source and

    theta_ij > 0: including j raises i's loss (negative transfer),
    theta_ij < 0: including j lowers i's loss (positive transfer).

Identifiability: when every subset has the same size alpha (the workflow's random design), the
indicators of the other tasks always sum to alpha - 1, which is collinear with the intercept.
The coefficients are then defined only up to a common shift; ridge returns the minimum-norm
solution, whose coefficients sum to zero over the sources (for any alpha > 0: the shift lies
in the null space of the centred indicators). theta_ij is
then the effect of j *relative to the average source*, and its sign is not the sign of
f_i({i, j}) - f_i({i}). Designs with subsets of several sizes (e.g. singletons, as in
:func:`taskgroup.data.designs.singletons_and_pairs`) pin the intercept to f_i({i}) and make the
signs absolute.

Ground truth for the negative-transfer report is pairwise: transfer_ij = f_i({i, j}) - f_i({i})
from the pair design (:func:`pairwise_transfer`, computed by
:func:`taskgroup.group.affinity.transfer_matrices`); negative transfer means transfer_ij > 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold

from taskgroup.data.tables import FORWARD_COMPARISON, FORWARD_SELECTION, check_columns
from taskgroup.group.affinity import VALUE_COLUMNS, check_one_design, transfer_matrices

log = logging.getLogger(__name__)

# The columns this module reads (the full schemas are in taskgroup.data.tables; an optional
# ``design`` column, if present, must hold a single design because subset ids restart per design).
SUBSET_COLUMNS = {"subset_id": "int", "task": "str"}
COEFFICIENT_COLUMNS = {"target": "str", "source": "str", "coefficient": "float"}


@dataclass(frozen=True)
class SurrogateSettings:
    """The config section ``surrogates`` without ``enabled``.

    alpha: ridge strength (> 0) of every surrogate.
    n_folds: folds (>= 2) of the held-out quality.
    threshold: in loss units (>= 0); predicted negative transfer = coefficient > threshold,
        selected source = coefficient < -threshold. 0 is the "no effect" point: with
        singletons in the design it is exactly the sign of f_i({i, j}) - f_i({i}), and it
        needs no calibration in loss units, whose scale varies between runs. On fixed-size
        designs 0 means "worse than the average source" (see the module docstring) and no
        threshold recovers absolute signs.
    seed: seed of the held-out folds.
    anchor_singletons: whether the pair design's singletons join the random design
        (:func:`with_singletons`), pinning each intercept to the single-task loss.
    Raises ValueError for n_folds < 2.
    """

    alpha: float
    n_folds: int
    threshold: float
    seed: int
    anchor_singletons: bool

    def __post_init__(self):
        if self.n_folds < 2:
            raise ValueError(f"n_folds = {self.n_folds} must be at least 2")


@dataclass(frozen=True)
class Design:
    """Regression design of one target task.

    x: (n_subsets, k - 1) float 0/1, column c = whether the subset holds ``sources[c]``.
    y: (n_subsets,) float, the target's loss after training on the subset.
    sources: the k - 1 other task names, in task order.
    subset_ids: (n_subsets,) int64, the subset of each row, ascending.
    """

    x: np.ndarray
    y: np.ndarray
    sources: list[str]
    subset_ids: np.ndarray


def membership_design(
    subsets: pd.DataFrame,
    values: pd.DataFrame,
    target: str,
    task_names: list[str],
    split: str = "val",
) -> Design:
    """The surrogate's design for ``target``: indicators of the other tasks and the target loss.

    subsets: long table (subset_id, task), one row per member task (schema SUBSETS).
    values: long table (subset_id, task, split, loss, ...) (schema SUBSET_VALUES); the rows of
    ``target`` with ``split`` give y.
    Rows are the subsets that contain ``target``, in ascending subset_id. Raises ValueError if
    such a subset has no (or more than one) loss for the target, or if a value row names a subset
    the design does not hold. A target that no subset contains gives an empty design.
    """
    check_one_design(subsets, SUBSET_COLUMNS, "subsets")
    check_one_design(values, VALUE_COLUMNS, "subset values")
    if target not in task_names:
        raise ValueError(f"target {target!r} is not one of the {len(task_names)} tasks")
    unknown = sorted(set(subsets["task"]) - set(task_names))
    if unknown:
        raise ValueError(f"subsets name tasks {unknown[:5]} that the dataset does not have")
    sources = [name for name in task_names if name != target]
    ids = np.sort(subsets.loc[subsets["task"] == target, "subset_id"].unique()).astype(np.int64)
    mine = values[(values["task"] == target) & (values["split"] == split)]
    stray = sorted(set(mine["subset_id"]) - set(ids))
    if stray:
        raise ValueError(
            f"subset values: task {target!r} has {split!r} losses for subsets {stray[:5]} that "
            f"do not contain it in the subsets table"
        )
    repeated = mine["subset_id"][mine["subset_id"].duplicated()].unique()
    if len(repeated):
        raise ValueError(
            f"subset values: task {target!r} has several {split!r} losses for subsets "
            f"{sorted(repeated)[:5]}"
        )
    loss = mine.set_index("subset_id")["loss"].reindex(ids)
    missing = loss.index[loss.isna()].tolist()
    if missing:
        raise ValueError(
            f"subset values: no {split!r} loss of task {target!r} for {len(missing)} subset(s) "
            f"that contain it, e.g. subset_id {missing[:5]}"
        )
    chosen = subsets[subsets["subset_id"].isin(ids) & (subsets["task"] != target)]
    row_of = pd.Series(np.arange(len(ids)), index=ids)
    col_of = pd.Series(np.arange(len(sources)), index=sources)
    x = np.zeros((len(ids), len(sources)), dtype=float)
    x[row_of[chosen["subset_id"]].to_numpy(), col_of[chosen["task"]].to_numpy()] = 1.0
    return Design(x=x, y=loss.to_numpy(dtype=float), sources=sources, subset_ids=ids)


def _held_out_quality(design: Design, alpha: float, n_folds: int, seed: int):
    """Out-of-fold (mse, r2, spearman) of the ridge surrogate over k seeded folds."""
    folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    predicted = np.empty_like(design.y)
    for train, test in folds.split(design.x):
        model = Ridge(alpha=alpha, fit_intercept=True).fit(design.x[train], design.y[train])
        predicted[test] = model.predict(design.x[test])
    residual = design.y - predicted
    mse = float(np.mean(residual**2))
    spread = float(np.sum((design.y - design.y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / spread if spread > 0 else np.nan
    if np.ptp(design.y) > 0 and np.ptp(predicted) > 0:
        spearman = float(spearmanr(design.y, predicted).statistic)
    else:
        spearman = np.nan
    return mse, r2, spearman


def fit(
    subsets: pd.DataFrame,
    values: pd.DataFrame,
    task_names: list[str],
    settings: SurrogateSettings,
    split: str = "val",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit one ridge surrogate per target task and measure it on held-out subsets.

    Per target i: ``Ridge(settings.alpha, fit_intercept=True)`` of f_i(S) (the ``split``
    loss) on the indicators of the other tasks over all subsets containing i (see
    :func:`membership_design`). Held-out quality: a seeded shuffled k-fold
    (``settings.n_folds``, ``settings.seed``) over those subsets; every subset is predicted
    once by the model fitted on the other folds, and the pooled out-of-fold predictions are
    scored. ``settings.threshold`` and ``settings.anchor_singletons`` are not used here.

    Returns ``(coefficients, quality)``:

    coefficients, one row per ordered pair target != source (k (k - 1) rows, targets then
    sources in task order): target, source (str); coefficient (float64, loss units per included
    source; > 0 = including source raises target loss = negative transfer); intercept (float64,
    the target's fitted intercept, repeated on its rows); n_subsets (int64, subsets holding both
    target and source; 0 means the coefficient is unidentified and ridge sets it to 0).
    Targets that no subset contains get NaN coefficient and intercept (and a logged warning).

    quality, one row per target in task order: target (str); n_subsets (int64, subsets holding
    the target); mse (float64, out-of-fold mean squared error, loss units squared); r2 (float64,
    1 - SS_res / SS_tot of the out-of-fold predictions); spearman (float64, rank correlation of
    out-of-fold predictions with the losses). Targets with fewer than 2 * n_folds subsets get
    NaN quality and a logged warning; constant losses or predictions give NaN r2/spearman.
    """
    alpha, n_folds = settings.alpha, settings.n_folds
    coefficient_rows = []
    quality_rows = []
    for target in task_names:
        design = membership_design(subsets, values, target, task_names, split=split)
        n_target = len(design.y)
        together = design.x.sum(axis=0).astype(np.int64)
        if n_target == 0:
            log.warning("surrogate: no subset contains task %r; its coefficients are NaN", target)
            coefficient, intercept = np.full(len(design.sources), np.nan), np.nan
        else:
            model = Ridge(alpha=alpha, fit_intercept=True).fit(design.x, design.y)
            coefficient, intercept = model.coef_.astype(float), float(model.intercept_)
        coefficient_rows.append(
            pd.DataFrame(
                {
                    "target": target,
                    "source": design.sources,
                    "coefficient": coefficient,
                    "intercept": intercept,
                    "n_subsets": together,
                }
            )
        )
        if n_target < 2 * n_folds:
            log.warning(
                "surrogate: task %r is in %d subset(s), fewer than 2 * n_folds = %d; its "
                "held-out quality is NaN",
                target,
                n_target,
                2 * n_folds,
            )
            mse = r2 = spearman = np.nan
        else:
            mse, r2, spearman = _held_out_quality(design, alpha, n_folds, settings.seed)
        quality_rows.append((target, n_target, mse, r2, spearman))
    coefficients = pd.concat(coefficient_rows, ignore_index=True)
    quality = pd.DataFrame(
        quality_rows, columns=["target", "n_subsets", "mse", "r2", "spearman"]
    ).astype({"n_subsets": np.int64, "mse": float, "r2": float, "spearman": float})
    return coefficients, quality


def pairwise_transfer(
    values: pd.DataFrame, task_names: list[str], split: str = "val", every_pair: bool = True
) -> pd.DataFrame:
    """Ground-truth pairwise transfer from the losses of the pair design, as a long table.

    values: long subset-values table (schema SUBSET_VALUES); the transfer, its rule for
    repeated subsets, ``every_pair`` and its errors are those of
    :func:`taskgroup.group.affinity.transfer_matrices`.

    Returns one row per ordered pair target i != source j (k (k - 1) rows, targets then sources
    in task order; with ``every_pair`` False only the pairs the sampled design holds, so
    that :func:`score_negative_transfer` scores those alone): target, source (str);
    loss_alone (float64, f_i({i})); loss_with (float64,
    f_i({i, j})); transfer (float64, loss_with - loss_alone, loss units; > 0 = j hurts i);
    negative (bool, transfer > 0). Raises ValueError naming the missing singletons and pairs.
    """
    alone, together, transfer = transfer_matrices(values, task_names, split, every_pair)
    k = len(task_names)
    first, second = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    off = (first != second) & ~np.isnan(together)
    names = np.asarray(task_names, dtype=object)
    return pd.DataFrame(
        {
            "target": names[first[off]],
            "source": names[second[off]],
            "loss_alone": alone[first[off]],
            "loss_with": together[off],
            "transfer": transfer[off],
            "negative": transfer[off] > 0,
        }
    )


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def score_negative_transfer(
    coefficients: pd.DataFrame, pairwise: pd.DataFrame, threshold: float
) -> pd.DataFrame:
    """Precision, recall and F1 of "coefficient > threshold" as a predictor of negative transfer.

    coefficients: long (target, source, coefficient, ...) from :func:`fit`.
    pairwise: long (target, source, negative, ...) from :func:`pairwise_transfer` (or any
    table with a boolean ``negative`` ground truth per ordered pair).
    threshold: in loss units; predicted negative = coefficient > threshold.

    Scores the ordered pairs present in both tables with a finite coefficient; raises ValueError
    if no pair is common. Returns one row per target (task order of ``coefficients``) then one
    overall row (pooled counts): level ("target" | "overall"), target (str; None on the overall
    row), n_pairs, tp, fp, fn, tn (int64), precision, recall, f1 (float64; NaN where the
    denominator is 0; f1 = 2 tp / (2 tp + fp + fn)).
    """
    check_columns(coefficients, COEFFICIENT_COLUMNS, "coefficients")
    if "negative" not in pairwise.columns or not pd.api.types.is_bool_dtype(pairwise["negative"]):
        raise ValueError("pairwise: needs a boolean column 'negative' (see pairwise_transfer)")
    check_columns(pairwise, {"target": "str", "source": "str"}, "pairwise")
    joined = coefficients[["target", "source", "coefficient"]].merge(
        pairwise[["target", "source", "negative"]], on=["target", "source"], how="inner"
    )
    unfit = joined["coefficient"].isna()
    if unfit.any():
        log.warning("negative transfer: %d pair(s) without a coefficient are skipped", unfit.sum())
        joined = joined[~unfit]
    if joined.empty:
        raise ValueError(
            "negative transfer: coefficients and pairwise share no (target, source) pair"
        )
    predicted = joined["coefficient"].to_numpy() > threshold
    actual = joined["negative"].to_numpy(dtype=bool)
    counts = pd.DataFrame(
        {
            "target": joined["target"].to_numpy(),
            "tp": predicted & actual,
            "fp": predicted & ~actual,
            "fn": ~predicted & actual,
            "tn": ~predicted & ~actual,
        }
    )
    order = [name for name in pd.unique(coefficients["target"]) if name in set(counts["target"])]
    per_target = counts.groupby("target").sum().reindex(order).astype(np.int64).reset_index()
    per_target.insert(0, "level", "target")
    overall = per_target[["tp", "fp", "fn", "tn"]].sum().to_frame().T.astype(np.int64)
    overall.insert(0, "target", None)
    overall.insert(0, "level", "overall")
    table = pd.concat([per_target, overall], ignore_index=True)
    tp, fp, fn, tn = (table[column].to_numpy() for column in ("tp", "fp", "fn", "tn"))
    table.insert(2, "n_pairs", (tp + fp + fn + tn).astype(np.int64))
    table["precision"] = _ratio(tp, tp + fp)
    table["recall"] = _ratio(tp, tp + fn)
    table["f1"] = _ratio(2 * tp, 2 * tp + fp + fn)
    return table


def selected_sources(coefficients: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per target, the sources the surrogate predicts to help: coefficient < -threshold.

    coefficients: long (target, source, coefficient, ...) from :func:`fit`;
    threshold in loss units (>= 0 is the usual choice; a source with |coefficient| <= threshold
    is neither selected nor predicted harmful).

    Returns one row per selected (target, source) pair: target, source (str), coefficient
    (float64), sorted by target (in the table's order) then by coefficient, most helpful first.
    Targets with no selected source have no rows.
    """
    check_columns(coefficients, COEFFICIENT_COLUMNS, "coefficients")
    chosen = coefficients[coefficients["coefficient"] < -threshold]
    rank = pd.Series(np.arange(coefficients["target"].nunique()),
                     index=pd.unique(coefficients["target"]))
    chosen = chosen.assign(_order=rank[chosen["target"]].to_numpy())
    chosen = chosen.sort_values(["_order", "coefficient"], kind="stable")
    return chosen[["target", "source", "coefficient"]].reset_index(drop=True)


def _jaccard(first: set, second: set) -> float:
    """|A & B| / |A | B|, 1 for two empty sets."""
    union = first | second
    return len(first & second) / len(union) if union else 1.0


def compare_with_forward(
    coefficients: pd.DataFrame, selection: pd.DataFrame, threshold: float = 0.0
) -> pd.DataFrame:
    """Per target, the surrogate's selected sources against forward selection's.

    coefficients: from :func:`fit` (target, source, coefficient, intercept); the
    surrogate's set is :func:`selected_sources` at ``threshold`` (loss units; the workflow
    passes ``SurrogateSettings.threshold``, the default 0 is the "no effect" point). selection: the
    forward_selection table (target, step, added, size, subset_id, loss; see
    :mod:`taskgroup.stages.forward`), whose set per target is the sources added at steps >= 1.

    Returns the forward_comparison table (one row per target of ``coefficients``, in its
    order; columns documented in :mod:`taskgroup.data.tables`). Raises ValueError naming the
    target if the selection has no path for it.
    """
    check_columns(coefficients, COEFFICIENT_COLUMNS | {"intercept": "float"}, "coefficients")
    check_columns(selection, FORWARD_SELECTION, "forward selection")
    chosen = selected_sources(coefficients, threshold)
    rows = []
    for target, mine in coefficients.groupby("target", sort=False):
        path = selection[selection["target"] == target].sort_values("step")
        if path.empty:
            raise ValueError(
                f"forward selection: no path for target {target!r}; its targets are "
                f"{sorted(selection['target'].unique())[:5]}..."
            )
        forward = set(path.loc[path["step"] > 0, "added"])
        surrogate = set(chosen.loc[chosen["target"] == target, "source"])
        coefficient = mine.set_index("source")["coefficient"]
        top = set(coefficient.sort_values(kind="stable").index[: len(forward)])
        intercept = float(mine["intercept"].iloc[0])
        rows.append(
            (
                target, len(surrogate), len(forward), len(surrogate & forward),
                _jaccard(surrogate, forward), _jaccard(top, forward),
                float(path["loss"].iloc[0]), float(path["loss"].iloc[-1]),
                intercept + float(coefficient[sorted(surrogate)].sum()),
                intercept + float(coefficient[sorted(forward)].sum()),
            )
        )
    return pd.DataFrame(rows, columns=list(FORWARD_COMPARISON)).astype(
        {column: np.int64 for column in ("n_surrogate", "n_forward", "n_both")}
    )


def with_singletons(
    subsets: pd.DataFrame, values: pd.DataFrame, pair_values: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The random design's subsets and values plus the singleton subsets {i} of the pair
    design, renumbered after the random design's ids (design "random+singletons").

    With every random subset of one size, the surrogate's coefficients are only relative
    (they sum to zero per target, see the module docstring); the singletons' f_i({i}) pin
    the intercept to the task's single-task loss, so a coefficient's sign says whether the
    source helps or hurts on its own scale, which the pairwise ground truth needs.
    """
    sizes = pair_values.groupby("subset_id")["task"].transform("nunique")
    singles = pair_values[sizes == 1]
    if singles.empty:
        raise ValueError("pair design values: no singleton subsets to anchor the surrogates")
    offset = int(subsets["subset_id"].max()) + 1
    old_ids = np.sort(singles["subset_id"].unique())
    new_id = pd.Series(offset + np.arange(len(old_ids)), index=old_ids)
    singles = singles.assign(subset_id=new_id.loc[singles["subset_id"]].to_numpy())
    single_subsets = singles[["subset_id", "task"]].drop_duplicates()
    design = "random+singletons"
    combined_subsets = pd.concat(
        [subsets[["subset_id", "task"]], single_subsets], ignore_index=True
    ).assign(design=design)
    combined_values = pd.concat(
        [values.assign(design=design), singles.assign(design=design)], ignore_index=True
    )
    return combined_subsets, combined_values
