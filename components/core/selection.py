"""Picking the leaf to deploy: pure logic over measured leaf records, no TFX."""
from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Mapping, Optional, Sequence

from collabopt.components.core.errors import ConfigError


class Objective(str, enum.Enum):
    LATENCY = "latency"    # lowest Vela inference time, then smaller flash, then higher accuracy
    SIZE = "size"          # smallest flash (or .tflite), then lower latency, then higher accuracy
    ACCURACY = "accuracy"  # highest int8 accuracy, then lower latency, then smaller flash


# Leaves within this fraction of the best objective value tie, and the most accurate of them wins:
# a 1 % latency gain is not worth a point of accuracy (Vela's estimate is not that precise).
DEFAULT_OBJECTIVE_TOLERANCE = 0.02


# threshold name -> (measured field, "min" or "max")
THRESHOLD_FIELDS: dict[str, tuple[str, str]] = {
    "min_accuracy": ("int8_accuracy", "min"),
    "max_accuracy_drop": ("accuracy_drop", "max"),
    "max_tflite_bytes": ("tflite_bytes", "max"),
    "max_inference_ms": ("inference_ms", "max"),
    "max_sram_bytes": ("sram_bytes", "max"),
    "max_arena_bytes": ("arena_bytes", "max"),
}


@dataclasses.dataclass(frozen=True)
class LeafMetrics:
    """What was measured on one leaf; Vela figures are those of one target (`target`; the
    primary target when it is not named). `arena_bytes` is TFLM's tensor arena (core/tflm.py)."""

    path: str
    int8_accuracy: float
    tflite_bytes: int
    accuracy_drop: Optional[float] = None
    inference_ms: Optional[float] = None
    flash_bytes: Optional[int] = None
    sram_bytes: Optional[int] = None
    failure: Optional[str] = None      # why the leaf could not be built (a failed leaf)
    arena_bytes: Optional[int] = None
    target: Optional[str] = None

    def value(self, field: str) -> Optional[float]:
        return getattr(self, field)

    @property
    def failed(self) -> bool:
        return self.failure is not None


@dataclasses.dataclass(frozen=True)
class Miss:
    threshold: str
    limit: float
    measured: Optional[float]

    @property
    def relative(self) -> float:
        """How far off, as a fraction of the limit (inf when the figure was not measured)."""
        if self.measured is None:
            return math.inf
        return abs(self.measured - self.limit) / max(abs(self.limit), 1e-9)

    def describe(self) -> str:
        field, kind = THRESHOLD_FIELDS[self.threshold]
        if self.measured is None:
            return f"{field} was not measured (needed for {self.threshold}={self.limit:g})"
        word = "below" if kind == "min" else "above"
        return (f"{field} {self.measured:g} is {word} {self.threshold}={self.limit:g} "
                f"by {abs(self.measured - self.limit):.4g} ({self.relative:.1%})")


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """What a leaf must meet to be deployable; None means "not checked".

    Latency and SRAM come from Vela (per target); the arena from TFLM; the accuracy drop is
    measured against the baseline leaf and does not apply to the baseline itself.
    """

    min_accuracy: Optional[float] = None        # int8 .tflite accuracy on the eval split, [0, 1]
    max_accuracy_drop: Optional[float] = None   # baseline accuracy - accuracy, [0, 1]
    max_tflite_bytes: Optional[int] = None      # size of the .tflite, > 0
    max_inference_ms: Optional[float] = None    # Vela's estimated inference time, > 0
    max_sram_bytes: Optional[int] = None        # Vela's SRAM use on the NPU target, > 0
    max_arena_bytes: Optional[int] = None       # TFLM's tensor arena on a microcontroller, > 0

    def __post_init__(self):
        for name in ("min_accuracy", "max_accuracy_drop"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and 0.0 <= value <= 1.0):
                raise ConfigError(f"{name}={value!r} is out of range; it must be in [0, 1] "
                                  "(a fraction, e.g. 0.9 for 90 %).")
        for name in ("max_tflite_bytes", "max_sram_bytes", "max_arena_bytes"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and value > 0):
                raise ConfigError(f"{name}={value!r} is out of range; it must be an integer > 0 "
                                  "(bytes).")
        value = self.max_inference_ms
        if value is not None and not (_is_number(value) and value > 0):
            raise ConfigError(f"max_inference_ms={value!r} is out of range; it must be a number "
                              "> 0 (milliseconds).")

    @property
    def needs_vela(self) -> bool:
        return self.max_inference_ms is not None or self.max_sram_bytes is not None

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def check_thresholds(thresholds: Mapping[str, Any] | Thresholds) -> Thresholds:
    """A validated Thresholds record; unknown names and out-of-range values are ConfigErrors."""
    if isinstance(thresholds, Thresholds):
        return thresholds
    unknown = sorted(set(thresholds) - set(THRESHOLD_FIELDS))
    if unknown:
        raise ConfigError(f"Unknown threshold {unknown[0]!r}; allowed: {', '.join(THRESHOLD_FIELDS)}")
    return Thresholds(**{k: v for k, v in thresholds.items() if v is not None})


def misses(leaf: LeafMetrics, thresholds: Mapping[str, Any] | Thresholds) -> list[Miss]:
    """The thresholds a leaf does not meet (empty: it meets them all)."""
    found = []
    for name, limit in check_thresholds(thresholds).as_dict().items():
        field, kind = THRESHOLD_FIELDS[name]
        measured = leaf.value(field)
        if measured is None and name == "max_accuracy_drop":
            continue  # the baseline itself has no drop to measure (NaN: it could not be measured)
        if measured is None or (isinstance(measured, float) and math.isnan(measured)):
            found.append(Miss(name, limit, None))
        elif (kind == "min" and measured < limit) or (kind == "max" and measured > limit):
            found.append(Miss(name, limit, float(measured)))
    return found


def reasons(leaf: LeafMetrics, thresholds: Mapping[str, Any] | Thresholds) -> list[str]:
    """Why a leaf is not deployable, one sentence per missed threshold (empty: it is)."""
    return [miss.describe() for miss in misses(leaf, thresholds)]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def objective_value(leaf: LeafMetrics, objective: Objective) -> float:
    """The figure the objective ranks by, lower is better (accuracy is negated)."""
    if objective == Objective.LATENCY:
        return leaf.inference_ms if leaf.inference_ms is not None else math.inf
    if objective == Objective.SIZE:
        return float(leaf.flash_bytes or leaf.tflite_bytes)
    return -leaf.int8_accuracy


def sort_key(leaf: LeafMetrics, objective: Objective):
    inf = math.inf
    latency = leaf.inference_ms if leaf.inference_ms is not None else inf
    size = leaf.flash_bytes or leaf.tflite_bytes  # 0 flash: weights in DRAM (Dedicated_Sram)
    accuracy = -leaf.int8_accuracy
    if objective == Objective.LATENCY:
        return (latency, size, accuracy, leaf.path)
    if objective == Objective.SIZE:
        return (size, latency, accuracy, leaf.path)
    return (accuracy, latency, size, leaf.path)


@dataclasses.dataclass(frozen=True)
class Selection:
    selected: Optional[LeafMetrics]
    ranking: tuple[str, ...]                  # leaves meeting the thresholds, best first
    closest: Optional[LeafMetrics]            # when none met them: the nearest miss
    closest_misses: tuple[Miss, ...]
    explanation: str
    tied: tuple[str, ...] = ()                # leaves within the tolerance of the best value


def within_tolerance(value: float, best: float, tolerance: float) -> bool:
    """Whether `value` ties with `best` (lower is better) within the fraction `tolerance`."""
    if math.isinf(best):
        return math.isinf(value)
    return value <= best + abs(best) * tolerance


def select(leaves: Sequence[LeafMetrics], thresholds: Mapping[str, float],
           objective: Objective | str = Objective.LATENCY,
           tolerance: float = DEFAULT_OBJECTIVE_TOLERANCE) -> Selection:
    """Among the leaves that meet every threshold, those within `tolerance` (a fraction) of the
    best objective value tie, and the most accurate of them wins (then the objective decides).
    Failed leaves are never selected; the explanation says how many failed."""
    objective = Objective(objective)
    thresholds = check_thresholds(thresholds)
    if not 0 <= tolerance <= 1:
        raise ConfigError(f"objective_tolerance={tolerance!r} is out of range; it must be in "
                          "[0, 1] (a fraction, e.g. 0.02 for 2 %).")
    failed = [l for l in leaves if l.failed]
    built = [l for l in leaves if not l.failed]
    failed_note = (f" {len(failed)} leaf/leaves failed to build: "
                   + "; ".join(f"{l.path} ({l.failure})" for l in failed) + "." if failed else "")
    if not built:
        return Selection(None, (), None, (),
                         ("No leaves were evaluated." if not leaves else
                          "No leaf could be built." + failed_note))
    passing = sorted((l for l in built if not misses(l, thresholds)),
                     key=lambda l: sort_key(l, objective))
    if passing:
        best_value = objective_value(passing[0], objective)
        tied = [l for l in passing
                if within_tolerance(objective_value(l, objective), best_value, tolerance)]
        winner = min(tied, key=lambda l: (-l.int8_accuracy, sort_key(l, objective)))
        ranking = [winner] + [l for l in passing if l is not winner]
        runner_up = f"; next: {ranking[1].path}" if len(ranking) > 1 else ""
        if len(tied) > 1:
            others = ", ".join(f"{l.path} ({l.int8_accuracy:.4f})" for l in tied if l is not winner)
            why = (f"{len(tied)} leaves are within {tolerance:.0%} of the best {objective.value} "
                   f"({passing[0].path}): {winner.path} is the most accurate of them "
                   f"({_figures(winner)}; the others: {others})")
        else:
            why = f"it is best by {objective.value} ({_figures(winner)})"
        return Selection(
            winner, tuple(l.path for l in ranking), None, (),
            f"Selected {winner.path}: {len(passing)} of {len(leaves)} leaves meet the thresholds "
            f"and {why}{runner_up}.{failed_note}", tuple(l.path for l in tied))
    scored = sorted(built, key=lambda l: (sum(m.relative for m in misses(l, thresholds)),
                                          sort_key(l, objective)))
    closest = scored[0]
    closest_misses = tuple(misses(closest, thresholds))
    return Selection(
        None, (), closest, closest_misses,
        f"No leaf meets the thresholds; closest is {closest.path}: "
        + "; ".join(m.describe() for m in closest_misses) + "." + failed_note)


def select_per_target(leaves: Mapping[str, Sequence[LeafMetrics]], thresholds: Mapping[str, float],
                      objective: Objective | str = Objective.LATENCY,
                      tolerance: float = DEFAULT_OBJECTIVE_TOLERANCE) -> dict[str, Selection]:
    """`select` once per target: `leaves` maps a target's name to every leaf measured with that
    target's Vela figures (the accuracy and size are the leaf's own). Keeps the targets' order."""
    return {target: select(measured, thresholds, objective, tolerance)
            for target, measured in leaves.items()}


def _figures(leaf: LeafMetrics) -> str:
    parts = [f"int8 accuracy {leaf.int8_accuracy:.4f}"]
    if leaf.inference_ms is not None:
        parts.append(f"{leaf.inference_ms:.4g} ms")
    parts.append(f"{leaf.tflite_bytes} B .tflite")
    if leaf.flash_bytes is not None:
        parts.append(f"{leaf.flash_bytes} B flash")
    return ", ".join(parts)
