"""Selector executor: read the leaves' evaluations, call core.selection, write model + blessing."""
from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import path_utils

from collabopt.components import keys
from collabopt.components import types as t
from collabopt.components.core.selection import DEFAULT_OBJECTIVE_TOLERANCE, LeafMetrics, select
from collabopt.components.failure import failure_of
from collabopt.components.properties import get_property, set_properties

BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"


def leaf_metrics(evaluation: types.Artifact) -> LeafMetrics:
    failure = failure_of(evaluation)
    return LeafMetrics(
        path=get_property(evaluation, t.TECHNIQUE_PATH),
        int8_accuracy=float(get_property(evaluation, t.INT8_ACCURACY, 0.0)),
        tflite_bytes=int(get_property(evaluation, t.TFLITE_BYTES, 0)),
        accuracy_drop=get_property(evaluation, t.ACCURACY_DROP),
        inference_ms=get_property(evaluation, t.INFERENCE_MS),
        flash_bytes=get_property(evaluation, t.FLASH_BYTES),
        sram_bytes=get_property(evaluation, t.SRAM_BYTES),
        failure=failure.describe() if failure else None,
    )


class Executor(base_executor.BaseExecutor):

    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        evaluations = {}
        for key in sorted(input_dict):
            if input_dict[key]:
                evaluation = artifact_utils.get_single_instance(input_dict[key])
                evaluations[get_property(evaluation, t.TECHNIQUE_PATH)] = evaluation
        leaves = [leaf_metrics(evaluation) for evaluation in evaluations.values()]
        thresholds = json.loads(exec_properties[keys.THRESHOLDS_KEY])
        objective = exec_properties[keys.OBJECTIVE_KEY]
        tolerance = exec_properties.get(keys.OBJECTIVE_TOLERANCE_KEY)
        selection = select(leaves, thresholds, objective,
                           DEFAULT_OBJECTIVE_TOLERANCE if tolerance is None else float(tolerance))
        logging.info("%s", selection.explanation)

        model = artifact_utils.get_single_instance(output_dict[keys.MODEL_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[keys.BLESSING_KEY])
        chosen = selection.selected
        summary = {
            t.SELECTED_PATH: chosen.path if chosen else "",
            t.OBJECTIVE: objective,
            t.RANKING: list(selection.ranking),
            t.EXPLANATION: selection.explanation,
            t.CLOSEST_PATH: selection.closest.path if selection.closest else "",
            t.TIED: list(selection.tied),
            t.FAILED_LEAVES: sorted(leaf.path for leaf in leaves if leaf.failed),
            t.SEARCH_TRACE: exec_properties.get(keys.SEARCH_TRACE_KEY) or None,
        }
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
        set_properties(blessing, {t.BLESSED: int(chosen is not None), **summary})
        marker = BLESSED_FILE if chosen else NOT_BLESSED_FILE
        with fileio.open(os.path.join(blessing.uri, marker), "w") as f:
            f.write(selection.explanation)


def _copy(src: str, dst: str) -> None:
    fileio.copy(src, dst, overwrite=True)
    logging.info("Copied %s to %s", src, dst)
