"""Settings of the gradient estimator, as frozen dataclasses built from the validated config.

Torch-free, so that the rule files can build a rule's params from them at parse time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

# The batches' memory constants are in taskgroup.resources, which also reserves that memory
# in the jobs' mem_mb. Not settings: they change no result, so they never travel through a
# rule's params; a job derives its batches from its mem_mb with batch_memory_mb.
from taskgroup.resources import BATCH_MB

KINDS = ("rademacher", "gaussian")

def batch_memory_mb(mem_mb: float) -> float:
    """The memory a job of ``mem_mb`` MB gives its batches: half of it, at most BATCH_MB. A
    batch never holds more than the job's formula reserved for it (a whole chunk, or
    PROJECTION_BATCH_EXAMPLES examples, capped at BATCH_MB)."""
    return min(float(BATCH_MB), mem_mb / 2)


STRUCTURES = ("dense", "kronecker", "sparse", "eigen", "energy")
# How the gradients are scaled before they are projected: "none" (the Euclidean geometry of
# a plain gradient step) or "adam" (the per-parameter scale of Adam, the optimizer of the
# real fine-tuning; see taskgroup.estimate.projection).
PRECONDITIONERS = ("none", "adam")
# The metric of each subset's fit: "fixed" (the projection's, one for every subset),
# "subset" (each projected coordinate's step further normalized by its gradients'
# second moment over the subset's own examples, as Adam fine-tuning on the subset does; see
# taskgroup.estimate.linearized.subset_step_scales) or "auto" ("subset" where the
# projection keeps every parameter, so that a coordinate is a parameter as Adam sees it,
# else "fixed"; see GradientEstimateSettings.for_projection).
STEP_SCALES = ("auto", "fixed", "subset")


@dataclass(frozen=True)
class ProjectionSettings:
    """The settings that define a projection (see :mod:`taskgroup.estimate.projection`).

    structure: "dense", "kronecker", "sparse", "eigen" or "energy" (how each layer's block
    of P is built; "eigen" and "energy" are fitted to the data, not drawn). kind:
    "rademacher" or "gaussian" entries. seed: the seed every random block is derived from
    ("eigen" and "energy" use neither kind nor seed). dim: the projected size d (a model
    with at most d parameters is kept exactly).
    nonzeros: entries per row of P (sparse only, else None). preconditioner: "none" or
    "adam" (the gradients are scaled by Adam's per-parameter scale, fitted to the data,
    before they are projected).
    Raises ValueError for an unknown structure, kind or preconditioner, a dim below 1, or
    nonzeros missing or below 1 for "sparse", or set for another structure.
    """

    structure: str
    kind: str
    seed: int
    dim: int
    nonzeros: int | None
    preconditioner: str = "none"

    def __post_init__(self):
        if self.structure not in STRUCTURES:
            raise ValueError(
                f"projection.structure = {self.structure!r}; expected one of {STRUCTURES}"
            )
        if self.kind not in KINDS:
            raise ValueError(f"projection.kind = {self.kind!r}; expected one of {KINDS}")
        if self.preconditioner not in PRECONDITIONERS:
            raise ValueError(
                f"projection.preconditioner = {self.preconditioner!r}; expected one of "
                f"{PRECONDITIONERS}"
            )
        if self.dim is None or self.dim < 1:
            raise ValueError(f"projection.dim = {self.dim!r}; expected a positive size")
        if self.structure == "sparse" and (self.nonzeros is None or self.nonzeros < 1):
            raise ValueError(
                f"projection.nonzeros = {self.nonzeros!r}: structure sparse needs a positive "
                "count"
            )
        if self.structure != "sparse" and self.nonzeros is not None:
            raise ValueError(
                f"projection.nonzeros = {self.nonzeros!r} is set, but structure "
                f"{self.structure} does not use it"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping) -> ProjectionSettings:
        """The settings from a mapping holding structure, kind, seed, dim, preconditioner
        and (sparse only) nonzeros: the projection config section, a rule's params or a
        projection table row. Every other key is ignored. Raises KeyError when a needed key
        is missing."""
        structure = str(mapping["structure"])
        nonzeros = int(mapping["nonzeros"]) if structure == "sparse" else None
        return cls(
            structure, str(mapping["kind"]), int(mapping["seed"]), int(mapping["dim"]),
            nonzeros, str(mapping["preconditioner"]),
        )

    def description(self) -> dict:
        """The settings the structure uses, keys sorted: dim, kind, preconditioner, seed,
        structure and (sparse) nonzeros. :meth:`from_mapping` rebuilds equal settings from
        it."""
        values = {
            "structure": self.structure, "kind": self.kind, "seed": self.seed, "dim": self.dim,
            "preconditioner": self.preconditioner,
        }
        if self.structure == "sparse":
            values["nonzeros"] = self.nonzeros
        return {key: values[key] for key in sorted(values)}


# A setting chosen on the held-out subsets before it is used: gradient_estimate.l2
# (taskgroup.stages.validate.calibrate_estimate, against real fine-tuning) and finetune.lr
# (calibrate_finetune, against a second real fine-tuning).
AUTO = "auto"


def positive_or_auto(value) -> bool:
    """Whether ``value`` is :data:`AUTO` or a positive number (a bool is neither)."""
    if isinstance(value, str):
        return value == AUTO
    return not isinstance(value, bool) and value > 0


def auto_or_float(value) -> float | str:
    """A config value that may be :data:`AUTO`: text is kept as it is (for
    :func:`positive_or_auto` to judge), a number becomes a float."""
    return value if isinstance(value, str) else float(value)


# gradient_estimate.task_scales: fitted on the held-out subsets, or none.
TASK_SCALES = (AUTO, "none")


def check_step_counts(newton_steps: int, flow_steps: int) -> None:
    """Raise ValueError when both ``newton_steps`` and ``flow_steps`` exceed 1: a flow
    stopped early has no optimum for further Newton steps to refine."""
    if flow_steps > 1 and newton_steps > 1:
        raise ValueError(
            f"gradient_estimate.flow_steps = {flow_steps} and newton_steps = "
            f"{newton_steps}: a flow stopped early has no optimum for further Newton steps "
            "to refine; set one of them to 1"
        )


@dataclass(frozen=True)
class GradientEstimateSettings:
    """How the linearized estimate fits each subset's shift (see
    :mod:`taskgroup.estimate.linearized`): l2, the L2 strength of the per-subset offset fit
    (> 0), or "auto" before it is chosen (see :meth:`with_l2`); newton_steps, Newton steps
    from w = 0 (>= 1); max_relative_shift, the cap on ||P w|| / ||theta*|| (None = no cap);
    flow_steps, implicit Euler steps of the gradient flow of the unregularized quadratic
    model run for a time 1 / l2 (>= 1; 1 is the ridge solution, more steps approach
    gradient descent stopped early); task_scales, "auto" (each task's estimated changes
    scaled and offset by a line fitted on the held-out real fine-tunings, see
    :mod:`taskgroup.estimate.task_scales`) or "none"; curvature_tolerance (>= 0), how
    much of each task's curvature the subsets solved on their training examples may drop
    (see :func:`taskgroup.estimate.linearized.compress_curvature`; 0: none, the exact fit);
    step_scale, "fixed" (every subset fitted in the projection's metric), "subset" (in
    the metric of Adam run on the subset's own examples, see
    :func:`taskgroup.estimate.linearized.subset_step_scales`; no compressed curvature) or
    "auto" (either, by the projection: :meth:`for_projection`).
    Raises ValueError for an l2 that is neither "auto" nor positive, newton_steps or
    flow_steps below 1, both above 1 (a flow stopped early has no optimum for further
    Newton steps to refine), a cap that is not positive, another task_scales, a
    negative curvature_tolerance, another step_scale, or step_scale "subset" or "auto"
    with newton_steps above 1 (further Newton steps are taken in the fixed metric)."""

    l2: float | str
    newton_steps: int
    max_relative_shift: float | None
    flow_steps: int = 1
    task_scales: str = "none"
    curvature_tolerance: float = 0.0
    step_scale: str = "fixed"

    def __post_init__(self):
        if not positive_or_auto(self.l2):
            raise ValueError(
                f"gradient_estimate.l2 = {self.l2!r}; expected a positive number or {AUTO!r}"
            )
        if self.newton_steps < 1:
            raise ValueError(
                f"gradient_estimate.newton_steps = {self.newton_steps!r}; expected >= 1"
            )
        if self.flow_steps < 1:
            raise ValueError(
                f"gradient_estimate.flow_steps = {self.flow_steps!r}; expected >= 1"
            )
        check_step_counts(self.newton_steps, self.flow_steps)
        if self.task_scales not in TASK_SCALES:
            raise ValueError(
                f"gradient_estimate.task_scales = {self.task_scales!r}; expected one of "
                f"{list(TASK_SCALES)}"
            )
        if not self.curvature_tolerance >= 0:
            raise ValueError(
                f"gradient_estimate.curvature_tolerance = {self.curvature_tolerance!r}; "
                "expected a number >= 0"
            )
        if self.step_scale not in STEP_SCALES:
            raise ValueError(
                f"gradient_estimate.step_scale = {self.step_scale!r}; expected one of "
                f"{list(STEP_SCALES)}"
            )
        if self.step_scale != "fixed" and self.newton_steps > 1:
            raise ValueError(
                f"gradient_estimate.step_scale = {self.step_scale} needs newton_steps 1; "
                f"found {self.newton_steps} (step_scale fixed allows more)"
            )
        if self.max_relative_shift is not None and not self.max_relative_shift > 0:
            raise ValueError(
                f"gradient_estimate.max_relative_shift = {self.max_relative_shift!r}; "
                "expected a positive number or null"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping) -> GradientEstimateSettings:
        """The settings from the gradient_estimate config section or a rule's params
        (l2, newton_steps, max_relative_shift, flow_steps, task_scales,
        curvature_tolerance, step_scale; other keys, such as l2_candidates, are ignored).
        Raises KeyError when one of the seven is missing."""
        shift = mapping["max_relative_shift"]
        return cls(
            auto_or_float(mapping["l2"]), int(mapping["newton_steps"]),
            None if shift is None else float(shift), int(mapping["flow_steps"]),
            str(mapping["task_scales"]), float(mapping["curvature_tolerance"]),
            str(mapping["step_scale"]),
        )

    @property
    def l2_is_auto(self) -> bool:
        return self.l2 == AUTO

    @property
    def scales_tasks(self) -> bool:
        """Whether the estimate's changes are scaled per task (task_scales "auto")."""
        return self.task_scales == AUTO

    def for_projection(self, exact: bool) -> GradientEstimateSettings:
        """The settings with step_scale "auto" resolved for a projection that keeps every
        parameter (``exact``: "subset", each projected coordinate is then one parameter,
        whose step Adam normalizes) or not ("fixed": a coordinate mixes parameters, and
        its own second moment over a subset is not what Adam normalizes by); other
        step_scales unchanged."""
        if self.step_scale != AUTO:
            return self
        return replace(self, step_scale="subset" if exact else "fixed")

    def with_l2(self, l2: float) -> GradientEstimateSettings:
        """The same settings with l2 set to ``l2`` (the chosen one when l2 is "auto")."""
        return replace(self, l2=float(l2))
