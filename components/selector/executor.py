"""Selector executor: read the leaves' evaluations, call core.selection, write model + blessing."""
from __future__ import annotations

import json
import os
from typing import Any, Optional

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import path_utils

from collabopt.components import keys
from collabopt.components import types as t
from collabopt.components.core.selection import (DEFAULT_OBJECTIVE_TOLERANCE, LeafMetrics,
                                                 Selection, select_per_target)
from collabopt.components.failure import failure_of
from collabopt.components.properties import get_property, set_properties

BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"


def leaf_metrics(evaluation: types.Artifact, target: Optional[str] = None) -> LeafMetrics:
    """The leaf's figures, with the Vela figures of `target` from the evaluation's `per_target`
    (default: the primary target's, its flat properties). A target whose Vela step failed is a
    failed leaf for that target."""
    failure = failure_of(evaluation)
    failed = failure.describe() if failure else None
    figures = {"inference_ms": get_property(evaluation, t.INFERENCE_MS),
               "flash_bytes": get_property(evaluation, t.FLASH_BYTES),
               "sram_bytes": get_property(evaluation, t.SRAM_BYTES)}
    if target is not None:
        entry = _entry(evaluation, target)
        figures = {k: entry.get(k) for k in figures}
        failed = failed or entry.get("failure")
    return LeafMetrics(
        path=get_property(evaluation, t.TECHNIQUE_PATH),
        int8_accuracy=float(get_property(evaluation, t.INT8_ACCURACY, 0.0)),
        tflite_bytes=int(get_property(evaluation, t.TFLITE_BYTES, 0)),
        accuracy_drop=get_property(evaluation, t.ACCURACY_DROP),
        arena_bytes=get_property(evaluation, t.ARENA_BYTES),
        failure=failed, target=target, **figures)


def _entry(evaluation: types.Artifact, target: str) -> dict[str, Any]:
    """The evaluation's `per_target` entry of `target` ({} when it has none)."""
    return next((r for r in per_target(evaluation) if r.get("target") == target), {})


def per_target(evaluation: types.Artifact) -> list[dict[str, Any]]:
    text = get_property(evaluation, t.PER_TARGET)
    return json.loads(text) if text else []


class Executor(base_executor.BaseExecutor):

    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        evaluations = {}
        for key in sorted(input_dict):
            if input_dict[key]:
                evaluation = artifact_utils.get_single_instance(input_dict[key])
                evaluations[get_property(evaluation, t.TECHNIQUE_PATH)] = evaluation
        thresholds = json.loads(exec_properties[keys.THRESHOLDS_KEY])
        objective = exec_properties[keys.OBJECTIVE_KEY]
        tolerance = exec_properties.get(keys.OBJECTIVE_TOLERANCE_KEY)
        tolerance = DEFAULT_OBJECTIVE_TOLERANCE if tolerance is None else float(tolerance)
        targets = json.loads(exec_properties.get(keys.TARGETS_KEY) or "[]")
        # The primary target is judged on the evaluations' own (primary) figures; the others on
        # their entries in `per_target`.
        measured = {None: [leaf_metrics(e) for e in evaluations.values()]}
        for target in targets[1:]:
            measured[target] = [leaf_metrics(e, target) for e in evaluations.values()]
        selections = select_per_target(measured, thresholds, objective, tolerance)
        for target, selection in selections.items():
            logging.info("%s: %s", target or "primary target", selection.explanation)

        primary = selections[None]
        model = artifact_utils.get_single_instance(output_dict[keys.MODEL_KEY])
        chosen = primary.selected
        summary = _summary(primary, measured[None], objective, exec_properties)
        if chosen:
            evaluation = evaluations[chosen.path]
            serving_dir = path_utils.serving_model_dir(model.uri)
            fileio.makedirs(serving_dir)
            _copy(os.path.join(get_property(evaluation, t.TFLITE_URI), t.TFLITE_FILE_NAME),
                  os.path.join(serving_dir, t.TFLITE_FILE_NAME))
            vela_uri = get_property(evaluation, t.VELA_URI)
            if vela_uri:
                _copy(os.path.join(vela_uri, t.VELA_TFLITE_FILE_NAME),
                      os.path.join(serving_dir, t.VELA_TFLITE_FILE_NAME))
            set_properties(model, {t.TECHNIQUE_PATH: chosen.path, **summary})
        else:
            set_properties(model, summary)
        blessings = [(keys.BLESSING_KEY, targets[0] if targets else None, primary)]
        blessings += [(keys.extra_blessing_key(i), target, selections[target])
                      for i, target in enumerate(targets[1:], start=1)]
        for key, target, selection in blessings:
            blessing = artifact_utils.get_single_instance(output_dict[key])
            leaves = measured[None if key == keys.BLESSING_KEY else target]
            set_properties(blessing, {
                t.BLESSED: int(selection.selected is not None),
                t.TARGET: target, t.PRIMARY: int(key == keys.BLESSING_KEY),
                **_summary(selection, leaves, objective, exec_properties)})
            if selection.selected is not None:
                chosen_eval = evaluations[selection.selected.path]
                set_properties(blessing, {
                    t.TFLITE_URI: get_property(chosen_eval, t.TFLITE_URI),
                    t.VELA_URI: _vela_uri(chosen_eval, target) if target else None})
            marker = BLESSED_FILE if selection.selected else NOT_BLESSED_FILE
            with fileio.open(os.path.join(blessing.uri, marker), "w") as f:
                f.write(selection.explanation)


def _summary(selection: Selection, leaves: list[LeafMetrics], objective: str,
             exec_properties: dict[str, Any]) -> dict[str, Any]:
    chosen = selection.selected
    return {
        t.SELECTED_PATH: chosen.path if chosen else "",
        t.OBJECTIVE: objective,
        t.RANKING: list(selection.ranking),
        t.EXPLANATION: selection.explanation,
        t.CLOSEST_PATH: selection.closest.path if selection.closest else "",
        t.TIED: list(selection.tied),
        t.FAILED_LEAVES: sorted(leaf.path for leaf in leaves if leaf.failed),
        t.SEARCH_TRACE: exec_properties.get(keys.SEARCH_TRACE_KEY) or None,
    }


def _vela_uri(evaluation: types.Artifact, target: str) -> Optional[str]:
    return _entry(evaluation, target).get("vela_uri")


def _copy(src: str, dst: str) -> None:
    fileio.copy(src, dst, overwrite=True)
    logging.info("Copied %s to %s", src, dst)
