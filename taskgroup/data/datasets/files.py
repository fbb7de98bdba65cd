"""Reading the user's files (Parquet, CSV, TSV) so that every failure names the file.

A file that cannot be read (empty, cut short, CSV text under a Parquet name, a Parquet file
under a CSV name, not UTF-8 text) and a table without data rows raise :class:`DataError`
with the path, what was found and what was expected, instead of the reader's own exception.

In CSV and TSV files the ``text_columns`` keep their spelling: they are read as text
(``01`` and ``1`` stay different), and only an empty cell is missing (``NA``, ``None``,
``n/a`` are names); the other columns keep pandas' usual parsing (numbers, and its usual
missing-value markers such as ``NA`` and ``nan`` become NaN).
"""

from __future__ import annotations

import os

import pandas as pd
from pandas._libs.parsers import STR_NA_VALUES

from taskgroup.data.datasets.errors import DataError
from taskgroup.data.tables import PARQUET_MAGIC, parquet_damage

FORMATS = ("parquet", "csv", "tsv")


# Separators of spreadsheet exports other than the expected one (a CSV file saved with
# semicolons where the decimal mark is a comma, a tab-separated file named .csv).
OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars", ",": "commas"}


def read_header(path: str | os.PathLike, kind: str) -> list[str]:
    """The column names of the ``kind`` file at ``path`` (one of :data:`FORMATS`), without
    reading its rows. Raises DataError naming the file if it cannot be read as ``kind``,
    if two columns have the same name, or if a CSV or TSV header is one name holding
    another separator (a file separated by semicolons, tabs or commas)."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            names = list(pq.read_schema(path).names)
        except Exception as error:  # pyarrow's ArrowInvalid, OSError
            raise _unreadable_parquet(path, error) from None
    else:
        if _starts_as_parquet(path):  # the CSV parser would take it for text
            raise _unreadable_text(path, kind, None)
        try:
            names = list(pd.read_csv(path, nrows=0, sep=_separator(kind)).columns)
            # the names as written: pandas renames a repeated name "a" to "a.1"
            written = pd.read_csv(path, nrows=1, header=None, sep=_separator(kind),
                                  dtype=str, keep_default_na=False).iloc[0].tolist()
        except Exception as error:  # EmptyDataError, ParserError, UnicodeDecodeError
            raise _unreadable_text(path, kind, error) from None
        repeated = sorted({name for name in written if name and written.count(name) > 1})
        if repeated:
            raise _repeated_names(path, repeated)
        if len(names) == 1:
            found = [name for sep, name in OTHER_SEPARATORS.items()
                     if sep != _separator(kind) and sep in names[0]]
            if found:
                expected = "tabs" if kind == "tsv" else "commas"
                raise DataError(
                    f"{path}: the header is a single column name, {names[0]!r}, holding "
                    f"{found[0]}: the file seems separated by {found[0]}, but a .{kind} file "
                    f"is read as separated by {expected}; save it with {expected}"
                    + ("" if kind == "tsv" else " (or with tabs, named .tsv)")
                )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise _repeated_names(path, repeated)
    return names


def _repeated_names(path, repeated: list[str]) -> DataError:
    return DataError(
        f"{path}: column name(s) {repeated} appear more than once in the header; expected "
        "unique column names (rename or drop the copies)"
    )


def read_rows(
    path: str | os.PathLike,
    kind: str,
    columns: list[str] | None = None,
    text_columns: tuple[str, ...] = (),
    require_rows: bool = True,
) -> pd.DataFrame:
    """The ``columns`` (None: all, in the file's order) of the ``kind`` file at ``path``;
    ``text_columns`` of a CSV or TSV file as text (module docstring).

    Raises DataError naming the file if it cannot be read as ``kind``, or, with
    ``require_rows``, if it has no data rows."""
    if kind == "parquet":
        try:
            frame = pd.read_parquet(path, columns=columns)
        except Exception as error:  # pyarrow's ArrowInvalid, OSError
            raise _unreadable_parquet(path, error) from None
    else:
        header = read_header(path, kind)
        wanted = header if columns is None else columns
        text = [column for column in text_columns if column in wanted]
        options = {}
        if text:
            # STR_NA_VALUES: pandas' own missing-value markers (NA, nan, None, n/a, ...),
            # which read_csv applies by default; kept for the columns not read as text.
            options = {
                "dtype": {column: str for column in text},
                "keep_default_na": False,
                "na_values": {
                    column: [""] if column in text else list(STR_NA_VALUES) for column in wanted
                },
            }
        try:
            frame = pd.read_csv(path, usecols=wanted, sep=_separator(kind), **options)
        except Exception as error:
            raise _unreadable_text(path, kind, error) from None
        frame = frame[wanted]
    if require_rows and frame.empty:
        raise DataError(
            f"{path}: the file has a header but no data rows; expected one row per "
            "example"
        )
    return frame


def _separator(kind: str) -> str:
    return "\t" if kind == "tsv" else ","


def _starts_as_parquet(path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC


def _unreadable_parquet(path, error: Exception) -> DataError:
    return DataError(
        f"{path}: not a readable Parquet file ({parquet_damage(path, error)}); a file "
        "ending in .parquet or .pq is read as Parquet: give a CSV file a .csv name, write "
        "a file cut short again"
    )


def _unreadable_text(path, kind: str, error: Exception | None) -> DataError:
    name = kind.upper()
    if isinstance(error, pd.errors.EmptyDataError):
        found = "the file is empty: no header line"
    elif _starts_as_parquet(path):
        found = "it is a Parquet file: name it .parquet"
    elif isinstance(error, UnicodeDecodeError):
        found = f"it is not UTF-8 text ({error})"
    else:
        found = f"{type(error).__name__}: {error}"
    return DataError(
        f"{path}: not a readable {name} file ({found}); expected a header line of column "
        "names and one line per row"
    )
