"""The Evaluator's thresholds and the blessing decision. Pure: never imports TFX or TensorFlow."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional

from components import keys
from components.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """What a leaf must meet to be blessed; None means "not checked"."""

    min_accuracy: Optional[float] = None        # int8 .tflite accuracy on the eval split, [0, 1]
    max_accuracy_drop: Optional[float] = None   # baseline accuracy - accuracy, [0, 1]
    max_tflite_bytes: Optional[int] = None      # size of the .tflite, > 0
    max_inference_ms: Optional[float] = None    # Vela's estimated inference time, > 0
    max_sram_bytes: Optional[int] = None        # Vela's SRAM (tensor arena) use, > 0

    def __post_init__(self):
        for name in (keys.MIN_ACCURACY_KEY, keys.MAX_ACCURACY_DROP_KEY):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and 0.0 <= value <= 1.0):
                raise ConfigError(f"{name}={value!r} is out of range; it must be in [0, 1] "
                                  "(a fraction, e.g. 0.9 for 90 %).")
        for name in (keys.MAX_TFLITE_BYTES_KEY, keys.MAX_SRAM_BYTES_KEY):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and value > 0):
                raise ConfigError(f"{name}={value!r} is out of range; it must be an integer > 0 "
                                  "(bytes).")
        value = self.max_inference_ms
        if value is not None and not (_is_number(value) and value > 0):
            raise ConfigError(f"{keys.MAX_INFERENCE_MS_KEY}={value!r} is out of range; it must "
                              "be a number > 0 (milliseconds).")

    @property
    def needs_vela(self) -> bool:
        return self.max_inference_ms is not None or self.max_sram_bytes is not None


@dataclasses.dataclass(frozen=True)
class Measurements:
    """What the Evaluator measured or read from its inputs' properties."""

    int8_accuracy: float
    tflite_bytes: int
    baseline_accuracy: Optional[float] = None
    inference_ms: Optional[float] = None
    sram_bytes: Optional[int] = None

    @property
    def accuracy_drop(self) -> Optional[float]:
        if self.baseline_accuracy is None:
            return None
        return self.baseline_accuracy - self.int8_accuracy


def judge(measured: Measurements, thresholds: Thresholds, has_baseline: bool = True) -> list[str]:
    """Why the leaf is not blessed: one human-readable reason per failed threshold (empty: bless).

    No thresholds at all bless every model (as a rubber stamp does). Without a baseline
    (`has_baseline=False`) the model *is* the baseline: `max_accuracy_drop` does not apply to it.
    With a baseline that has no accuracy, `max_accuracy_drop` refuses the blessing.
    """
    reasons: list[str] = []
    t, m = thresholds, measured
    if t.min_accuracy is not None and not m.int8_accuracy >= t.min_accuracy:
        reasons.append(f"accuracy {m.int8_accuracy:.4f} is below {keys.MIN_ACCURACY_KEY}="
                       f"{t.min_accuracy:.4f}")
    if t.max_accuracy_drop is not None and has_baseline:
        drop = m.accuracy_drop
        if drop is None:
            reasons.append(f"{keys.MAX_ACCURACY_DROP_KEY}={t.max_accuracy_drop:.4f} is set but "
                           "the baseline evaluation has no accuracy to compare with")
        elif not drop <= t.max_accuracy_drop:
            reasons.append(f"accuracy drop {drop:.4f} (baseline {m.baseline_accuracy:.4f} -> "
                           f"{m.int8_accuracy:.4f}) exceeds {keys.MAX_ACCURACY_DROP_KEY}="
                           f"{t.max_accuracy_drop:.4f}")
    if t.max_tflite_bytes is not None and not m.tflite_bytes <= t.max_tflite_bytes:
        reasons.append(f"tflite size {m.tflite_bytes} bytes exceeds {keys.MAX_TFLITE_BYTES_KEY}="
                       f"{t.max_tflite_bytes}")
    if t.max_inference_ms is not None:
        if m.inference_ms is None or math.isnan(m.inference_ms):
            reasons.append(f"{keys.MAX_INFERENCE_MS_KEY}={t.max_inference_ms} is set but the Vela "
                           "model has no inference time")
        elif not m.inference_ms <= t.max_inference_ms:
            reasons.append(f"inference time {m.inference_ms:.4f} ms exceeds "
                           f"{keys.MAX_INFERENCE_MS_KEY}={t.max_inference_ms}")
    if t.max_sram_bytes is not None:
        if m.sram_bytes is None:
            reasons.append(f"{keys.MAX_SRAM_BYTES_KEY}={t.max_sram_bytes} is set but the Vela "
                           "model has no SRAM use")
        elif not m.sram_bytes <= t.max_sram_bytes:
            reasons.append(f"SRAM use {m.sram_bytes} bytes exceeds {keys.MAX_SRAM_BYTES_KEY}="
                           f"{t.max_sram_bytes}")
    return reasons


def thresholds_from(props: Mapping[str, Any]) -> Thresholds:
    """The Thresholds record from the Evaluator's parameters (validated)."""
    return Thresholds(**{name: props.get(name) for name in (
        keys.MIN_ACCURACY_KEY, keys.MAX_ACCURACY_DROP_KEY, keys.MAX_TFLITE_BYTES_KEY,
        keys.MAX_INFERENCE_MS_KEY, keys.MAX_SRAM_BYTES_KEY)})


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


__all__ = ["Thresholds", "Measurements", "judge", "thresholds_from"]
