"""Settings of the gradient estimator, as frozen dataclasses built from the validated config.

Torch-free, so that the rule files can build a rule's params from them at parse time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

KINDS = ("rademacher", "gaussian")
# The size setting each projection structure uses; the other structure's is ignored.
SIZE_KEY = {"kronecker": "factor_dim", "dense": "dim"}
STRUCTURES = tuple(SIZE_KEY)


@dataclass(frozen=True)
class ProjectionSettings:
    """The settings that define a random projection (see :mod:`taskgroup.estimate.projection`).

    structure: "kronecker" or "dense". kind: "rademacher" or "gaussian" entries. seed: the
    seed every random block is derived from. factor_dim: the Kronecker factors' dimension cap
    (kronecker only, else None). dim: the projected dimension (dense only, else None).
    Raises ValueError for an unknown structure or kind, or when the structure's size is
    missing or not positive or the other structure's size is set.
    """

    structure: str
    kind: str
    seed: int
    factor_dim: int | None
    dim: int | None

    def __post_init__(self):
        if self.structure not in SIZE_KEY:
            raise ValueError(
                f"projection.structure = {self.structure!r}; expected one of {STRUCTURES}"
            )
        if self.kind not in KINDS:
            raise ValueError(f"projection.kind = {self.kind!r}; expected one of {KINDS}")
        for structure, key in SIZE_KEY.items():
            value = getattr(self, key)
            if structure == self.structure and (value is None or value < 1):
                raise ValueError(
                    f"projection.{key} = {value!r}: structure {structure} needs a positive size"
                )
            if structure != self.structure and value is not None:
                raise ValueError(
                    f"projection.{key} = {value!r} is set, but structure {self.structure} "
                    "does not use it"
                )

    @classmethod
    def from_mapping(cls, mapping: Mapping) -> ProjectionSettings:
        """The settings from a mapping holding structure, kind, seed and the structure's size
        (factor_dim for kronecker, dim for dense): the projection config section, a rule's
        params or a projection table row. Every other key (the other structure's size,
        batch_size, ...) is ignored. Raises KeyError when a needed key is missing."""
        structure = str(mapping["structure"])
        sizes = {key: None for key in SIZE_KEY.values()}
        if structure in SIZE_KEY:
            sizes[SIZE_KEY[structure]] = int(mapping[SIZE_KEY[structure]])
        return cls(structure, str(mapping["kind"]), int(mapping["seed"]), **sizes)

    def description(self) -> dict:
        """The settings the structure uses, keys sorted: structure, kind, seed and factor_dim
        (kronecker) or dim (dense). :meth:`from_mapping` rebuilds equal settings from it."""
        size_key = SIZE_KEY[self.structure]
        values = {
            "structure": self.structure, "kind": self.kind, "seed": self.seed,
            size_key: getattr(self, size_key),
        }
        return {key: values[key] for key in sorted(values)}


@dataclass(frozen=True)
class GradientEstimateSettings:
    """How the linearized estimate fits each subset's shift (see
    :mod:`taskgroup.estimate.linearized`): l2, the L2 strength of the per-subset offset fit
    (> 0); newton_steps, Newton steps from w = 0 (>= 1); max_relative_shift, the cap on
    ||P w|| / ||theta*|| (None = no cap)."""

    l2: float
    newton_steps: int
    max_relative_shift: float | None
