"""A user's own data: one table (Parquet or CSV), one row per example.

The table has a task column, a label column, feature columns and optionally a split column
(values ``train`` / ``val`` / ``test``). :func:`load_table` turns it into the examples and
tasks tables of :mod:`taskgroup.data.tables`, the same as the planted generator's, checking it on
the way: every problem raises :class:`DataError` with a message that names the file, the
column and the offending values.

Conventions (see also the README, "Bring your own data"):

- **Task names** are strings. A CSV task column is read as text, so a name keeps its
  spelling (``01`` and ``1`` are two tasks, ``1.0`` stays ``1.0``; ``NA``, ``None``,
  ``n/a`` are names, only an empty cell is missing). In a Parquet file a whole number
  (``1``, ``np.int16(1)``, ``1.0``) becomes its decimal digits (``"1"``), any other value
  ``str(value)``. Surrounding white space is stripped. Two distinct values with the same
  name (``1`` and ``"1"``, ``"a"`` and ``"a "``) are an error, as are empty task values.
- **Task order** (the canonical order of the tasks table): by value when the task column is
  numeric (in a CSV file: when every name is a number; equal values by name), otherwise by
  name.
- **Splits**: the split column when given; otherwise a seeded split per task, drawn within
  each label class for binary tasks (stratified), with ``split_fractions`` of the task's rows
  (rounded) in train and val and the rest in test. A task's split depends only on the seed,
  its name and its rows in file order, not on the other tasks.
- **Task type** (one for all tasks): ``auto`` = ``binary`` when the label column holds exactly
  the values 0 and 1, ``regression`` otherwise.
- **Features** ``auto``: every numeric column but the task, label and split columns and
  ``exclude_columns``; a column among them that carries the label (a leak) or counts the
  rows (a row number or a row id, :func:`row_counter_kind`) is an error that names it (with
  an explicit ``features`` list: a warning, the column is kept). Features are standardized
  with the mean and standard deviation (ddof 0) of the training split, per feature over
  all tasks; a constant feature keeps standard deviation 1. Column
  ``x`` becomes ``feature_x``. With ``standardize_label`` (the default), the labels of
  regression tasks are standardized the same way (one mean and standard deviation over the
  training rows of all tasks), so that the squared-error losses are in units of the label's
  spread and a freshly initialized head starts near the right scale; R^2 is unchanged.
  Binary labels stay 0/1.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from taskgroup.data.datasets.errors import DataError
from taskgroup.data.datasets.files import read_header, read_rows
from taskgroup.data.datasets.splits import stratified_split
from taskgroup.data.datasets.task_selection import SHOWN, kept_tasks, normalize_task_name
from taskgroup.data.datasets.task_selection import shown_names as _shown
from taskgroup.data.tables import FEATURE_PREFIX, SPLITS, tasks_table

log = logging.getLogger(__name__)

TASK_TYPES = ("auto", "binary", "regression")
# |Pearson correlation| with the label on the training rows above which a feature taken by
# features "auto" is refused as a leak of the label.
LEAK_CORRELATION = 0.999


@dataclass(frozen=True)
class TableSpec:
    """The ``dataset.table`` config section (defaults as in ``config/config.schema.yaml``)."""

    path: str
    task_column: str
    label_column: str
    features: str | tuple[str, ...] = "auto"
    exclude_columns: tuple[str, ...] = ()
    split_column: str | None = None
    split_fractions: dict = field(
        default_factory=lambda: {"train": 0.6, "val": 0.2, "test": 0.2}
    )
    seed: int = 0
    task_type: str = "auto"
    min_rows_per_split: int = 5
    standardize_label: bool = True
    tasks: tuple | None = None
    exclude_tasks: tuple = ()
    groups_path: str | None = None
    group_column: str | None = None

    def __post_init__(self):
        if self.task_type not in TASK_TYPES:
            raise DataError(
                f"dataset.table.task_type = {self.task_type!r}; expected one of {TASK_TYPES}"
            )
        fractions = self.split_fractions
        if sorted(fractions) != sorted(SPLITS) or not np.isclose(sum(fractions.values()), 1):
            raise DataError(
                f"dataset.table.split_fractions = {dict(fractions)}; expected keys train, val, "
                "test summing to 1"
            )
        roles = {"task_column": self.task_column, "label_column": self.label_column,
                 "split_column": self.split_column}
        named = [value for value in roles.values() if value is not None]
        if len(set(named)) < len(named):
            raise DataError(
                "dataset.table: task_column, label_column and split_column must name "
                f"different columns; found {', '.join(f'{k} = {v!r}' for k, v in roles.items())}"
            )
        if (self.groups_path is None) != (self.group_column is None):
            raise DataError(
                "dataset.table: groups_path and group_column go together; set both or neither"
            )


def table_spec(section: dict) -> TableSpec:
    """The spec from the ``dataset.table`` config section."""
    values = dict(section)
    if isinstance(values.get("features"), list):
        values["features"] = tuple(values["features"])
    for key in ("exclude_columns", "tasks", "exclude_tasks"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return TableSpec(**values)


# --- reading -------------------------------------------------------------------------------


def _format(path: str | Path) -> str:
    suffixes = Path(path).suffixes
    suffix = suffixes[-1].lower() if suffixes else ""
    if suffix in (".gz", ".bz2", ".xz", ".zst") and len(suffixes) > 1:
        suffix = suffixes[-2].lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        return "tsv"
    raise DataError(f"{path}: unknown file type {suffix!r}; expected .parquet or .csv (or .tsv)")


def _check_exists(path: str | Path, key: str) -> None:
    if Path(path).is_dir():
        raise DataError(f"{path}: is a folder ({key}); expected a Parquet or CSV file")
    if not Path(path).is_file():
        raise DataError(
            f"{path}: file not found ({key}; a relative path is read from the directory "
            f"Snakemake runs in, here {Path.cwd()})"
        )


def table_columns(path: str | Path) -> list[str]:
    """The column names of a Parquet or CSV file, without reading its rows."""
    return read_header(path, _format(path))


def read_columns(
    path: str | Path, columns: list[str], text_columns: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Only ``columns`` of a Parquet or CSV file, which must have data rows;
    ``text_columns`` of a CSV file as text (:func:`taskgroup.data.datasets.files.read_rows`)."""
    return read_rows(path, _format(path), columns, text_columns)


def _require_columns(path, available: list[str], wanted: dict[str, str]) -> None:
    """``wanted``: column -> the config key that names it."""
    for column, key in wanted.items():
        if column not in available:
            raise DataError(
                f"{path}: no column {column!r} ({key}); the file has columns {available}"
            )


def _positions(mask: np.ndarray, rows: np.ndarray | None = None) -> str:
    """The data rows (counting from 0, as in the file) where ``mask`` holds; ``rows``: the
    file row of each entry of ``mask`` (default: its position)."""
    rows = np.flatnonzero(mask) if rows is None else rows[mask]
    text = ", ".join(str(r) for r in rows[:SHOWN])
    return text + (", ..." if len(rows) > SHOWN else "")


# --- task names ----------------------------------------------------------------------------


def _is_number(text: str) -> bool:
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return False


def _task_names(path, column: pd.Series, task_column: str) -> tuple[pd.Series, list[str]]:
    """The normalized name of every row, and the task names in canonical order."""
    raw_values = pd.unique(column)
    names = {}
    by_name: dict[str, object] = {}
    for value in raw_values:
        name = normalize_task_name(value)
        if name is None:
            continue
        if name in by_name:
            raise DataError(
                f"{path}: column {task_column!r} has the distinct values {by_name[name]!r} and "
                f"{value!r}, which both become the task name {name!r} (task names are the "
                "values as text, stripped of surrounding spaces, whole numbers without "
                "'.0'); make them distinct"
            )
        by_name[name] = value
        names[value] = name
    row_names = column.map(names)
    missing = row_names.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"{path}: column {task_column!r} is empty in {int(missing.sum())} row(s) (data "
            f"rows {_positions(missing)}, counting from 0); every row needs a task"
        )
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        order = [by_name[name] for name in by_name]
        ordered = [names[value] for value in sorted(order)]
    elif _format(path) != "parquet" and all(_is_number(name) for name in by_name):
        # A CSV task column is read as text: numbers keep the order by value they had
        # when CSV ids were parsed as numbers ("01" just before "1").
        ordered = sorted(by_name, key=lambda name: (float(name), name))
    else:
        ordered = sorted(by_name)
    return row_names.astype(str), ordered


def _selected_tasks(path, spec: TableSpec, available: list[str]) -> list[str]:
    """The tasks of ``available`` (the data's, in canonical order) that ``tasks`` keeps
    (all when None) and ``exclude_tasks`` does not leave out."""
    return kept_tasks(
        available, spec.exclude_tasks, "dataset.table", f"{path}: ",
        f"column {spec.task_column!r}", keep=spec.tasks,
    )


def table_task_names(spec: TableSpec) -> list[str]:
    """The task names the loaded dataset will have, in canonical order, reading only the
    task column (for the number of tasks k at parse time)."""
    _check_exists(spec.path, "dataset.table.path")
    _require_columns(
        spec.path, table_columns(spec.path), {spec.task_column: "dataset.table.task_column"}
    )
    column = read_columns(spec.path, [spec.task_column], (spec.task_column,))[spec.task_column]
    _, ordered = _task_names(spec.path, column, spec.task_column)
    return _selected_tasks(spec.path, spec, ordered)


# --- the checks and the tables -------------------------------------------------------------


# Share of a text column's values that must read as numbers for features "auto" to take it
# for a numeric column spoilt by a few markers ("?", "-", "missing") rather than text.
NUMERIC_SHARE = 0.9


def _check_text_numbers(path, frame: pd.DataFrame, columns: list[str]) -> None:
    """Refuse a text column that features 'auto' would leave out but that holds numbers:
    written with a decimal comma, or numbers but for a few markers (at least
    :data:`NUMERIC_SHARE` of its values read as numbers)."""
    for column in columns:
        values = frame[column].dropna().astype(str).str.strip()
        values = values[values != ""]
        if values.empty:
            continue
        numbers = pd.to_numeric(values, errors="coerce").notna()
        commas = pd.to_numeric(values.str.replace(",", ".", regex=False), errors="coerce")
        if commas.notna().all() and not numbers.all():
            raise DataError(
                f"{path}: column {column!r} holds numbers written with a decimal comma "
                f"(such as {_shown(pd.unique(values[~numbers]).tolist())}); features 'auto' "
                "takes numeric columns only and would leave it out. Write the numbers with a "
                "decimal point, or leave the column out (dataset.table.exclude_columns)"
            )
        if numbers.mean() >= NUMERIC_SHARE:
            bad = values[~numbers]
            raise DataError(
                f"{path}: column {column!r} holds numbers but for {len(bad)} of its "
                f"{len(values)} values ({_shown(pd.unique(bad).tolist())}), so it was read as "
                "text; features 'auto' takes numeric columns only and would leave it out. "
                "Replace those values (leave the cell empty for a missing value, then impute "
                "it), or leave the column out (dataset.table.exclude_columns)"
            )


def _feature_names(path, spec: TableSpec, frame_columns: list[str], frame) -> list[str]:
    dtypes = frame.dtypes
    reserved = {spec.task_column, spec.label_column, spec.split_column}
    unknown = [c for c in spec.exclude_columns if c not in frame_columns]
    if unknown:
        raise DataError(
            f"{path}: dataset.table.exclude_columns names column(s) {unknown} that the file "
            f"does not have; it has columns {frame_columns}"
        )
    if spec.features == "auto":
        candidates = [
            c for c in frame_columns if c not in reserved and c not in spec.exclude_columns
        ]
        features = [
            c for c in candidates
            if pd.api.types.is_numeric_dtype(dtypes[c]) or pd.api.types.is_bool_dtype(dtypes[c])
        ]
        skipped = sorted(set(candidates) - set(features))
        _check_text_numbers(path, frame, skipped)
        if skipped:
            log.info("features 'auto': left out the non-numeric column(s) %s", skipped)
    else:
        features = list(spec.features)
        absent = [c for c in features if c not in frame_columns]
        if absent:
            raise DataError(
                f"{path}: feature column(s) {absent} (dataset.table.features) not in the file; "
                f"it has columns {frame_columns}"
            )
        clash = [c for c in features if c in reserved]
        if clash:
            raise DataError(
                f"{path}: dataset.table.features lists {clash}, which is the task, label or "
                "split column"
            )
    if not features:
        raise DataError(
            f"{path}: no numeric feature columns (dataset.table.features = {spec.features!r}, "
            f"exclude_columns = {list(spec.exclude_columns)}); the file has columns "
            f"{frame_columns}"
        )
    return features


def _check_numeric(path, frame: pd.DataFrame, columns: list[str], role: str) -> None:
    for column in columns:
        series = frame[column]
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            continue
        converted = pd.to_numeric(series, errors="coerce")
        bad = series[converted.isna() & series.notna()]
        if not len(bad):  # numbers stored as text
            bad = series.dropna()
        raise DataError(
            f"{path}: {role} column {column!r} is not numeric (dtype {series.dtype}; values "
            f"such as {_shown(pd.unique(bad))} in {len(bad)} row(s)); encode it as numbers "
            "or leave it out"
        )


def _check_finite(path, frame: pd.DataFrame, columns: list[str], rows: np.ndarray) -> None:
    """``rows``: the file's data row (from 0) of each row of ``frame``."""
    problems = []
    for column in columns:
        values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            problems.append(
                f"column {column!r}: {int(bad.sum())} row(s) (data rows {_positions(bad, rows)})"
            )
    if problems:
        raise DataError(
            f"{path}: NaN or infinite values in "
            + "; ".join(problems)
            + ". Data rows count from 0 (the header is not one); remove or impute the "
            "values, or leave the rows' tasks out (dataset.table.tasks)"
        )


def _check_float32_range(
    path, frame: pd.DataFrame, columns: list[str], rows: np.ndarray
) -> None:
    """Refuse values beyond float32's range: the examples table stores float32, and their
    squares overflow the standardization's float64 variance long before that. ``rows``: the
    file's data row (from 0) of each row of ``frame``."""
    limit = float(np.finfo(np.float32).max)
    problems = []
    for column in columns:
        values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.abs(values) > limit
        if bad.any():
            problems.append(
                f"column {column!r}: {int(bad.sum())} row(s) (data rows "
                f"{_positions(bad, rows)}, e.g. {values[bad][0]:g})"
            )
    if problems:
        raise DataError(
            f"{path}: values beyond the float32 range (|x| > {limit:.3g}) in "
            + "; ".join(problems)
            + ". Features and labels are stored as float32; rescale the column (other "
            "units, a logarithm) or leave it out. Data rows count from 0 (the header is "
            "not one)"
        )


def _check_label_leaks(
    path, spec: TableSpec, frame: pd.DataFrame, features: list[str], labels: np.ndarray,
    train: np.ndarray,
) -> None:
    """Refuse a feature taken by features 'auto' that equals the label on the training rows
    or correlates with it beyond :data:`LEAK_CORRELATION` (a copy or an encoding of the
    label: a leak); warn about one in an explicit features list (the user chose it)."""
    target = labels[train]
    leaks = []
    for column in features:
        values = frame[column].to_numpy(dtype=np.float64)[train]
        if np.array_equal(values, target):
            leaks.append(f"{column!r} equals it")
            continue
        if values.std() == 0 or target.std() == 0:
            continue
        correlation = float(np.corrcoef(values, target)[0, 1])
        if abs(correlation) > LEAK_CORRELATION:
            leaks.append(f"{column!r} correlates with it at r = {correlation:.5f}")
    if not leaks:
        return
    found = (
        f"{path}: on the {int(train.sum())} training rows, feature column(s) "
        f"{'; '.join(leaks)} (label column {spec.label_column!r}): such a feature carries "
        "the label into the inputs (a leak)"
    )
    _refuse_feature(spec, found)


def _counts_from(values: np.ndarray) -> int | None:
    """0 or 1 when ``values`` are exactly start, start + 1, .., start + n - 1; else None."""
    for start in (0, 1):
        if np.array_equal(values, np.arange(start, start + len(values))):
            return start
    return None


def row_counter_kind(values: np.ndarray, tasks: np.ndarray | None = None) -> str | None:
    """How ``values`` (one column, in file order) count the rows, or None when they do not:
    "row number 0..n-1" or "1..n" (e.g. the index pandas writes to a CSV file as
    'Unnamed: 0'); "increasing ids" / "decreasing ids" (whole numbers, strictly monotone
    in file order, so one per row: a row id, or the row number of a filtered file); with
    ``tasks`` (the task of each row), "row number within each task 0..n_t-1" (or 1..n_t),
    the count restarting at every task. Fewer than 3 rows, NaN or a fraction: None."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n < 3 or not np.isfinite(values).all() or not np.all(np.mod(values, 1) == 0):
        return None
    start = _counts_from(values)
    if start is not None:
        return f"row number {start}..{n - 1 + start}"
    steps = np.diff(values)
    if (steps > 0).all():
        return "increasing ids"
    if (steps < 0).all():
        return "decreasing ids"
    if tasks is None:
        return None
    groups = pd.Series(np.arange(n)).groupby(np.asarray(tasks), sort=False).indices.values()
    starts = {_counts_from(values[rows]) for rows in groups}
    if len(starts) == 1 and None not in starts:
        start = starts.pop()
        return f"row number within each task {start}..n_t{'-1' if start == 0 else ''}"
    return None


def _check_row_counters(
    path, spec: TableSpec, frame: pd.DataFrame, features: list[str], tasks: pd.Series
) -> None:
    """Refuse a feature taken by features 'auto' that counts the rows of the file
    (:func:`row_counter_kind` over all its data rows, in file order, ``tasks`` the task
    name of each): it says where a row sits in the file, not what the example is; warn
    about one in an explicit features list (the user chose it)."""
    counters = []
    for column in features:
        series = frame[column]
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            continue
        kind = row_counter_kind(
            series.to_numpy(dtype=np.float64, na_value=np.nan), tasks.to_numpy()
        )
        if kind is not None:
            counters.append(f"{column!r} ({kind})")
    if not counters:
        return
    found = (
        f"{path}: feature column(s) {', '.join(counters)} count the file's {len(frame)} data "
        "rows in file order (a row number or a row id): such a column says where a row "
        "sits in the file, not what the example is"
    )
    _refuse_feature(spec, found)


def _task_type(path, spec: TableSpec, labels: np.ndarray) -> str:
    values = np.unique(labels)
    is_binary = set(values.tolist()) == {0.0, 1.0}
    if spec.task_type == "binary" and not set(values.tolist()) <= {0.0, 1.0}:
        other = [v for v in values.tolist() if v not in (0.0, 1.0)]
        raise DataError(
            f"{path}: dataset.table.task_type is 'binary', but column {spec.label_column!r} "
            f"has values other than 0 and 1: {_shown(other)}"
        )
    if spec.task_type == "auto" and len(values) == 2 and not is_binary:
        low, high = values.tolist()
        raise DataError(
            f"{path}: column {spec.label_column!r} holds exactly two values, {low:g} and "
            f"{high:g}: with dataset.table.task_type 'auto' that is a regression target, but "
            f"two values are usually two classes. Binary labels are 0 and 1: recode them "
            f"({low:g} -> 0, {high:g} -> 1), or set dataset.table.task_type: regression if "
            "they are amounts"
        )
    if spec.task_type == "auto":
        return "binary" if is_binary else "regression"
    return spec.task_type


def _splits(
    path, spec: TableSpec, frame: pd.DataFrame, task_type: str, raw: pd.Series | None
) -> np.ndarray:
    """The split of every row of ``frame`` (columns task, label): ``raw`` (the split column)
    checked, or drawn per task."""
    if raw is not None:
        split = raw.map(lambda v: v.strip() if isinstance(v, str) else v)
        bad = ~split.isin(SPLITS).to_numpy()
        if bad.any():
            raise DataError(
                f"{path}: column {spec.split_column!r} (dataset.table.split_column) has "
                f"values {_shown(pd.unique(raw[bad]).tolist())} in {int(bad.sum())} row(s); "
                "expected train, val or test"
            )
        return split.to_numpy(dtype=object)
    split = np.empty(len(frame), dtype=object)
    labels = frame["label"].to_numpy()
    for task, rows in frame.groupby("task", sort=False).indices.items():
        rng = np.random.default_rng([spec.seed, zlib.crc32(task.encode())])
        # binary tasks are split within each label class; regression tasks in one stratum
        strata = labels[rows] if task_type == "binary" else np.zeros(len(rows))
        split[rows] = stratified_split(
            strata, spec.split_fractions["train"], spec.split_fractions["val"], rng
        )
    return split


def _check_task_sizes(path, spec: TableSpec, counts: pd.DataFrame) -> None:
    small = counts[(counts < spec.min_rows_per_split).any(axis=1)]
    if len(small):
        listed = ", ".join(
            f"{task!r} (" + ", ".join(f"{s} {counts.loc[task, s]}" for s in SPLITS) + ")"
            for task in small.index[:SHOWN]
        )
        more = f", ... ({len(small)} tasks in all)" if len(small) > SHOWN else ""
        raise DataError(
            f"{path}: task(s) with fewer than dataset.table.min_rows_per_split = "
            f"{spec.min_rows_per_split} rows in a split (column {spec.task_column!r}): "
            f"{listed}{more}. Leave them out (dataset.table.tasks) or lower min_rows_per_split"
        )


def _refuse_feature(spec: TableSpec, found: str) -> None:
    """Refuse a suspicious feature column (``found`` says which and why) when the features
    were taken by ``features: auto``; only warn when the user listed it."""
    if spec.features != "auto":
        log.warning("%s; it is kept because dataset.table.features lists it", found)
        return
    raise DataError(
        f"{found}. Leave it out (dataset.table.exclude_columns), or list the features "
        "(dataset.table.features) if it is a real one"
    )


def _single_labels(frame: pd.DataFrame, by, describe) -> str:
    """The groups of ``frame`` (columns ``by`` and label) whose label takes one value, as
    text: ``describe(key)`` followed by "(only label v in n rows)" for the first SHOWN of
    them, then how many in all; "" when there are none."""
    counts = frame.groupby(by, sort=False)["label"].agg(["nunique", "first", "size"])
    single = counts[counts["nunique"] < 2]
    listed = ", ".join(
        f"{describe(key)} (only label {row['first']:g} in {int(row['size'])} rows)"
        for key, row in single.head(SHOWN).iterrows()
    )
    return listed + ("" if len(single) <= SHOWN else f", ... ({len(single)} in all)")


def _check_classes(path, spec: TableSpec, frame: pd.DataFrame) -> None:
    listed = _single_labels(frame, "task", repr)
    if listed:
        raise DataError(
            f"{path}: binary task(s) with a single class in column {spec.label_column!r}: "
            f"{listed}. A binary task needs both labels; leave it out (dataset.table.tasks)"
        )
    listed = _single_labels(frame, ["task", "split"], lambda key: f"{key[0]!r} {key[1]}")
    if listed:
        raise DataError(
            f"{path}: binary task(s) with a single class in one split of column "
            f"{spec.label_column!r}: {listed}. Every "
            "split needs both labels (for the ROC AUC and the validation loss); leave the "
            "task out, or give it more rows of its rarer class in that split"
        )


def _check_label_spread(path, spec: TableSpec, frame: pd.DataFrame) -> None:
    """Refuse regression tasks (``frame``: columns task, label) whose label is the same in
    every row: there is nothing to learn, and R^2 is undefined."""
    listed = _single_labels(frame, "task", repr)
    if listed:
        raise DataError(
            f"{path}: regression task(s) whose column {spec.label_column!r} is the same in "
            f"every row: {listed}. There "
            "is nothing to learn and R^2 is undefined; leave it out (dataset.table.exclude_tasks)"
        )


def _check_feature_spread(path, frame: pd.DataFrame, features: list[str], train) -> None:
    """Refuse features that are all constant on the training rows: the inputs would carry
    no information, and every model would predict one value per task."""
    values = frame[features].to_numpy(dtype=np.float64)[train]
    if len(values) and np.all(values.max(axis=0) == values.min(axis=0)):
        raise DataError(
            f"{path}: every feature column ({_shown(features)}) is constant on the "
            f"{int(np.sum(train))} training rows: the inputs carry no information. Check "
            "dataset.table.features and exclude_columns"
        )


def _planted_groups(spec: TableSpec, tasks: list[str]) -> pd.Series:
    """The known group of every task (Int64, in ``tasks`` order) from ``groups_path``."""
    path = spec.groups_path
    _check_exists(path, "dataset.table.groups_path")
    _require_columns(
        path,
        table_columns(path),
        {
            spec.task_column: "dataset.table.task_column, also in the groups file",
            spec.group_column: "dataset.table.group_column",
        },
    )
    frame = read_columns(path, [spec.task_column, spec.group_column], (spec.task_column,))
    names, _ = _task_names(path, frame[spec.task_column], spec.task_column)
    groups = frame[spec.group_column]
    missing = groups.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"{path}: column {spec.group_column!r} is empty for task(s) "
            f"{_shown(names[missing])}"
        )
    repeated = names[names.duplicated()]
    if len(repeated):
        raise DataError(
            f"{path}: column {spec.task_column!r} lists task(s) {_shown(pd.unique(repeated))} "
            "more than once; a groups file has one row per task"
        )
    lacking = [task for task in tasks if task not in set(names)]
    if lacking:
        raise DataError(
            f"{path}: no {spec.group_column!r} for task(s) {_shown(lacking)}; the groups file "
            "needs a row for every task"
        )
    numeric = pd.api.types.is_numeric_dtype(groups) and not pd.api.types.is_bool_dtype(groups)
    if numeric and np.all(np.mod(groups.to_numpy(dtype=float), 1) == 0):
        codes = groups.to_numpy(dtype=np.int64)
    else:  # labels such as "foliated": numbered in sorted order of their text
        text = groups.astype(str)
        codes = text.map({label: i for i, label in enumerate(sorted(set(text)))}).to_numpy()
    by_task = pd.Series(codes, index=names.to_numpy())
    return by_task.loc[tasks].astype("Int64")


def _standardize(values: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Columns of ``values`` minus their mean over the ``train`` rows, divided by their
    standard deviation there (1 for a constant column), as float32."""
    mean = values[train].mean(axis=0)
    std = values[train].std(axis=0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return ((values - mean) / std).astype(np.float32)


def load_table(spec: TableSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read, check and convert the user's table (module docstring).

    Returns
    -------
    examples : DataFrame, columns task, split, feature_<column>.. (float32, standardized),
        label (float32; standardized for regression with ``standardize_label``); rows by
        task in canonical order, then split, then file order.
    tasks : DataFrame, one row per task: task, task_index, task_type, n_train, n_val,
        n_test, planted_group (from groups_path / group_column, else null).
    """
    path = spec.path
    _check_exists(path, "dataset.table.path")
    available = table_columns(path)
    wanted = {
        spec.task_column: "dataset.table.task_column",
        spec.label_column: "dataset.table.label_column",
    }
    if spec.split_column is not None:
        wanted[spec.split_column] = "dataset.table.split_column"
    _require_columns(path, available, wanted)
    frame = read_columns(path, available, (spec.task_column,))
    features = _feature_names(path, spec, available, frame)
    log.info(
        "%s: features %s (dataset.table.features = %r%s)", path, features, spec.features,
        ": every numeric column but the task, label and split columns and exclude_columns "
        f"{list(spec.exclude_columns)}" if spec.features == "auto" else "",
    )

    row_names, ordered = _task_names(path, frame[spec.task_column], spec.task_column)
    _check_row_counters(path, spec, frame, features, row_names)
    tasks = _selected_tasks(path, spec, ordered)
    keep = row_names.isin(tasks).to_numpy()
    file_rows = np.flatnonzero(keep)
    frame = frame.loc[keep].reset_index(drop=True)
    row_names = row_names[keep].reset_index(drop=True)

    _check_numeric(path, frame, features, "feature")
    _check_numeric(path, frame, [spec.label_column], "label")
    _check_finite(path, frame, features + [spec.label_column], file_rows)
    _check_float32_range(path, frame, features + [spec.label_column], file_rows)
    labels = frame[spec.label_column].to_numpy(dtype=np.float64)
    task_type = _task_type(path, spec, labels)

    work = pd.DataFrame({"task": row_names, "label": labels.astype(np.float32)})
    raw_split = None if spec.split_column is None else frame[spec.split_column]
    work["split"] = _splits(path, spec, work, task_type, raw_split)
    counts = (
        work.groupby(["task", "split"]).size().unstack(fill_value=0)
        .reindex(index=tasks, columns=list(SPLITS), fill_value=0)
    )
    _check_task_sizes(path, spec, counts)
    if task_type == "binary":
        _check_classes(path, spec, work)
    else:
        _check_label_spread(path, spec, work)
    train = (work["split"] == "train").to_numpy()
    _check_feature_spread(path, frame, features, train)
    _check_label_leaks(path, spec, frame, features, labels, train)
    standardized = _standardize(frame[features].to_numpy(dtype=np.float64), train)
    if task_type == "regression" and spec.standardize_label:
        work["label"] = _standardize(labels[:, None], train)[:, 0]

    examples = pd.DataFrame(
        standardized, columns=[f"{FEATURE_PREFIX}{column}" for column in features]
    )
    examples.insert(0, "split", work["split"].astype(str))
    examples.insert(0, "task", work["task"])
    examples["label"] = work["label"]
    task_rank = {task: i for i, task in enumerate(tasks)}
    split_rank = {split: i for i, split in enumerate(SPLITS)}
    order = np.lexsort(
        (
            np.arange(len(examples)),
            examples["split"].map(split_rank).to_numpy(),
            examples["task"].map(task_rank).to_numpy(),
        )
    )
    examples = examples.iloc[order].reset_index(drop=True)

    planted = None if spec.groups_path is None else _planted_groups(spec, tasks).tolist()
    task_table = tasks_table(tasks, task_type, counts[list(SPLITS)].to_numpy(), planted)
    log.info(
        "%s: %d rows, %d tasks (%s), %d features %s, splits %s",
        path, len(examples), len(tasks), task_type, len(features), features,
        "from column " + repr(spec.split_column) if spec.split_column
        else f"drawn with seed {spec.seed}",
    )
    return examples, task_table
