"""The one exception of the dataset loaders and generators."""

from __future__ import annotations


class DataError(ValueError):
    """The user's data (a table, a graph, a grouping file) or a dataset's config section
    cannot be used as configured; the message names the file or key, the column and what
    was expected."""
