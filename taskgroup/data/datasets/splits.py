"""The seeded, stratified train / val / test split that every dataset kind draws."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from taskgroup.data.datasets.errors import DataError


class TooFewToSplit(DataError):
    """A stratum is too small to give every split at least the required number of entries.

    value: the stratum's value; size: its number of entries.
    """

    def __init__(self, value, size: int, minimum: int):
        super().__init__(
            f"stratum {value!r} has {size} entries: too few for at least {minimum} in each of "
            "train, val and test"
        )
        self.value, self.size = value, size


def stratified_split(
    strata: np.ndarray,
    train_fraction: float,
    val_fraction: float,
    rng: np.random.Generator,
    *,
    values: Sequence | None = None,
    min_per_split: int = 0,
) -> np.ndarray:
    """The split ("train", "val" or "test") of every entry, drawn within each stratum.

    strata: (n,) the stratum of every entry (e.g. a binary label; one value for all entries
        gives a plain, unstratified split).
    values: the strata to split, in this order (default: the distinct values of ``strata``,
        sorted); a value without entries is an empty stratum.
    Each stratum of m entries, in turn, is shuffled with ``rng.permutation`` and cut: its first
    max(min_per_split, round(train_fraction * m)) entries go to train, the next
    max(min_per_split, round(val_fraction * m)) to val, the rest to test. The draw depends only
    on ``rng`` and the strata, not on the entries' other contents.

    Returns an (n,) object array of split names; an entry whose stratum is not in ``values``
    gets None. Raises TooFewToSplit when a stratum leaves test fewer than ``min_per_split``
    entries.
    """
    strata = np.asarray(strata)
    split = np.empty(len(strata), dtype=object)
    for value in np.unique(strata) if values is None else values:
        members = np.flatnonzero(strata == value)
        size = len(members)
        n_train = max(min_per_split, int(round(train_fraction * size)))
        n_val = max(min_per_split, int(round(val_fraction * size)))
        if size - n_train - n_val < min_per_split:
            raise TooFewToSplit(value, size, min_per_split)
        order = rng.permutation(members)
        split[order[:n_train]] = "train"
        split[order[n_train : n_train + n_val]] = "val"
        split[order[n_train + n_val :]] = "test"
    return split
