"""The ``training_options`` config sections as dataclasses (no torch: the rules read them
when Snakemake parses the workflow). Training with them is in
:mod:`taskgroup.models.within_group`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Reweighting:
    enabled: bool = False
    rank: int = 1


@dataclass(frozen=True)
class Alignment:
    enabled: bool = False
    epochs: int = 20
    lr: float = 0.001
    head_lr: float | None = None  # None = the training's lr


@dataclass(frozen=True)
class Diagnostics:
    enabled: bool = False
    every: int = 10


@dataclass(frozen=True)
class TrainingOptions:
    reweighting: Reweighting = field(default_factory=Reweighting)
    alignment: Alignment = field(default_factory=Alignment)
    diagnostics: Diagnostics = field(default_factory=Diagnostics)

    @classmethod
    def from_dict(cls, options: dict | None) -> "TrainingOptions":
        """From a (possibly partial or empty) ``training_options.<stage>`` section."""
        options = options or {}
        unknown = sorted(set(options) - {"reweighting", "alignment", "diagnostics"})
        if unknown:
            raise ValueError(f"training_options: unknown option(s) {unknown}")
        return cls(
            Reweighting(**options.get("reweighting", {})),
            Alignment(**options.get("alignment", {})),
            Diagnostics(**options.get("diagnostics", {})),
        )


_CLASSES = {"reweighting": Reweighting, "alignment": Alignment, "diagnostics": Diagnostics}


# Trainings of the final group models that the workflow can compare (training_options.final
# .variants): each name turns on these options, with the settings of training_options.final.
FINAL_VARIANTS = {
    "plain": (),
    "reweighted": ("reweighting",),
    "aligned": ("alignment",),
    "reweighted_aligned": ("reweighting", "alignment"),
}


def variant_options(final: dict | None, variant: str) -> dict:
    """The enabled options (as :func:`enabled_options` gives them) of the final-training
    ``variant``, from the ``training_options.final`` section ``final``: the variant's own
    options (FINAL_VARIANTS) with their settings there, plus diagnostics when enabled."""
    if variant not in FINAL_VARIANTS:
        raise ValueError(
            f"training_options.final.variants: unknown variant {variant!r}; expected one of "
            f"{sorted(FINAL_VARIANTS)}"
        )
    final = final or {}
    resolved = {
        name: {**final.get(name, {}), "enabled": name in FINAL_VARIANTS[variant]}
        for name in ("reweighting", "alignment")
    }
    if "diagnostics" in final:
        resolved["diagnostics"] = final["diagnostics"]
    return enabled_options(resolved)


def enabled_options(options: dict | None) -> dict:
    """Only the enabled options of a ``training_options.<stage>`` section, each with its
    defaults filled in and keys sorted (what the rules pass as params:, so that disabled
    options leave the jobs unchanged and an omitted default equals the written value)."""
    options = options or {}
    enabled = {}
    for name in sorted(options):
        if name not in _CLASSES:
            raise ValueError(f"training_options: unknown option {name!r}")
        if options[name].get("enabled", False):
            full = {**asdict(_CLASSES[name]()), **options[name]}
            enabled[name] = {key: full[key] for key in sorted(full)}
    return enabled
