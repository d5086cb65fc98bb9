"""Failed leaves: a step that cannot build its leaf records why, and the rest of the tree runs on.

A leaf that cannot be built (a layer TFMOT refuses, fine-tuning that diverged, a model the
converter or Vela cannot handle) is a result, not a crash (ARCHITECTURE.md). Every step on a
leaf's path runs `LeafStepExecutor.Do`:

- when an input on the leaf's path (its model, `.tflite` or Vela model; never the Examples or
  the baseline evaluation) carries a failure, the step does no work and writes its outputs with
  that failure;
- when the step's own work raises, the error becomes the failure of its outputs (the traceback
  goes to the log).

A failure is two artifact properties: `failed` (int 1) and `failure` (JSON: the step, the
technique path of the leaf, the error type, the message and what to do). The execution itself
completes, so the local, Beam and Kubeflow runners all carry on to the Evaluator (which records a
failed leaf) and the Selector (which chooses among the rest).
"""
from __future__ import annotations

import abc
import dataclasses
import json
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
from tfx import types as tfx_types
from tfx.dsl.components.base import base_executor

from collabopt.components import properties, types
from collabopt.components.core import errors

_MAX_MESSAGE = 600

# What a user can do about each kind of failure, when the message itself does not say.
_HINTS = {
    errors.UnsupportedLayerError: "Leave the layer out with `layers`, replace it, or drop this "
                                  "leaf from `leaves`; `collabopt check` lists every layer.",
    errors.TrainingDivergedError: "Lower training.learning_rate, or drop this leaf.",
    errors.StructureLostError: "Use the preserving mode that matches the input (pqat, cqat, "
                               "pcqat).",
    errors.VelaCompileError: "Check the operators with `vela --supported-ops-report`, or try "
                             "another accelerator_config.",
    errors.ConversionError: "Check that the model converts with tf.lite.TFLiteConverter.",
}


@dataclasses.dataclass(frozen=True)
class Failure:
    step: str            # the component class that failed, e.g. "PreservingQAT"
    path: str            # the technique path of the leaf it was building
    error: str           # the exception's type name
    message: str
    hint: str = ""

    @classmethod
    def from_exception(cls, step: str, path: str, exc: BaseException) -> "Failure":
        message = " ".join(str(exc).split()) or type(exc).__name__
        if len(message) > _MAX_MESSAGE:
            message = message[:_MAX_MESSAGE - 1] + "…"
        hint = next((h for kind, h in _HINTS.items() if isinstance(exc, kind)), "")
        if not isinstance(exc, errors.CollaboptError):
            hint = hint or "An unexpected error: the step's log has the traceback."
        return cls(step, path, type(exc).__name__, message, hint)

    @classmethod
    def from_json(cls, text: str) -> "Failure":
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def describe(self) -> str:
        """One line for tables and explanations."""
        return f"{self.step} failed ({self.error}): {self.message}" + (
            f" {self.hint}" if self.hint else "")


def failure_of(artifact: Optional[tfx_types.Artifact]) -> Optional[Failure]:
    if artifact is None or not properties.get_property(artifact, types.FAILED, 0):
        return None
    return Failure.from_json(properties.get_property(artifact, types.FAILURE))


def upstream_failure(input_dict: Dict[str, List[tfx_types.Artifact]],
                     keys: Sequence[str]) -> Optional[Failure]:
    """The failure carried by an input on the leaf's path (`keys`), if any."""
    for key in keys:
        for artifact in input_dict.get(key) or []:
            found = failure_of(artifact)
            if found is not None:
                return found
    return None


def mark_failed(artifacts: Sequence[tfx_types.Artifact], failure: Failure, path: str,
                extra: Optional[Dict[str, Any]] = None) -> None:
    """Records `failure` on the outputs of a step of leaf `path` (which may be downstream of the
    step that failed: `failure.path`)."""
    for artifact in artifacts:
        properties.set_properties(artifact, {
            types.FAILED: 1, types.FAILURE: failure.to_json(),
            types.TECHNIQUE_PATH: path, **(extra or {})})


class LeafStepExecutor(base_executor.BaseExecutor, abc.ABC):
    """A step on a leaf's path: does its work, or records why its leaf failed (see module doc)."""

    #: Input keys on the leaf's path whose failure this step passes on.
    LEAF_INPUT_KEYS: Sequence[str] = ()
    #: The component's name in failure messages.
    STEP: str = ""

    @abc.abstractmethod
    def run(self, input_dict: Dict[str, List[tfx_types.Artifact]],
            output_dict: Dict[str, List[tfx_types.Artifact]],
            exec_properties: Dict[str, Any]) -> None:
        """The step's work; raises when the leaf cannot be built."""

    @abc.abstractmethod
    def leaf_path(self, input_dict: Dict[str, List[tfx_types.Artifact]],
                  exec_properties: Dict[str, Any]) -> str:
        """The technique path of the leaf this step builds (without reading any model)."""

    def record_failure(self, output_dict: Dict[str, List[tfx_types.Artifact]],
                       failure: Failure, path: str, exec_properties: Dict[str, Any]) -> None:
        """Writes the outputs of a failed leaf (override to add figures or marker files)."""
        mark_failed([a for artifacts in output_dict.values() for a in artifacts], failure, path)

    def Do(self, input_dict: Dict[str, List[tfx_types.Artifact]],
           output_dict: Dict[str, List[tfx_types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        path = self.leaf_path(input_dict, exec_properties)
        failure = upstream_failure(input_dict, self.LEAF_INPUT_KEYS)
        if failure is not None:
            logging.warning("%s: not run, leaf %s already failed: %s", self.STEP, path,
                            failure.describe())
        else:
            try:
                self.run(input_dict, output_dict, exec_properties)
                return
            except Exception as exc:  # noqa: BLE001 — any error ends this leaf, not the run
                logging.exception("%s could not build leaf %s", self.STEP, path)
                failure = Failure.from_exception(self.STEP, path, exc)
        self.record_failure(output_dict, failure, path, exec_properties)
