"""Evaluator executor: measure the `.tflite` on the eval split, judge thresholds, write blessing."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Dict, List

from absl import logging
from tfx import types as tfx_types
from tfx.components.evaluator import constants as tfx_evaluator
from tfx.dsl.io import fileio

from collabopt.components import artifact_io, keys, params, types
from collabopt.components.core.selection import LeafMetrics, Thresholds, reasons as missed_thresholds
from collabopt.components.failure import LeafStepExecutor, failure_of, mark_failed

METRICS_FILE_NAME = "metrics.json"


class Executor(LeafStepExecutor):
    """Accuracy via core.metrics.tflite_accuracy; blessing as tfx's Evaluator writes it."""

    LEAF_INPUT_KEYS = (keys.TFLITE_MODEL_KEY, keys.VELA_MODEL_KEY)
    STEP = "Evaluator"

    def leaf_path(self, input_dict, exec_properties):
        return artifact_io.technique_path(artifact_io.single(input_dict, keys.TFLITE_MODEL_KEY))

    def record_failure(self, output_dict, failure, path, exec_properties):
        """A failed leaf: no figures, never blessed, the reason where the verdict goes."""
        reasons = json.dumps([failure.describe()])
        mark_failed(output_dict[keys.EVALUATION_KEY], failure, path,
                    {types.BLESSED: 0, types.REASONS: reasons})
        blessing = artifact_io.single(output_dict, keys.BLESSING_KEY)
        _write_marker(blessing.uri, blessed=False)
        mark_failed([blessing], failure, path, {
            tfx_evaluator.ARTIFACT_PROPERTY_BLESSED_KEY: tfx_evaluator.NOT_BLESSED_VALUE,
            types.REASONS: reasons})

    def run(self, input_dict: Dict[str, List[tfx_types.Artifact]],
            output_dict: Dict[str, List[tfx_types.Artifact]],
            exec_properties: Dict[str, Any]) -> None:
        from collabopt.components.core import data, metrics

        tflite_artifact = artifact_io.single(input_dict, keys.TFLITE_MODEL_KEY)
        baseline = artifact_io.optional_single(input_dict, keys.BASELINE_EVALUATION_KEY)
        evaluation = artifact_io.single(output_dict, keys.EVALUATION_KEY)
        blessing = artifact_io.single(output_dict, keys.BLESSING_KEY)
        thresholds = thresholds_from(exec_properties)

        tflite_bytes = artifact_io.read_bytes(tflite_artifact.uri, types.TFLITE_FILE_NAME)
        eval_ds = artifact_io.split_dataset(
            input_dict[keys.EXAMPLES_KEY], params.EVAL_SPLIT, exec_properties,
            artifact_io.tflite_input_shape(tflite_bytes))
        int8_accuracy = float(metrics.tflite_accuracy(tflite_bytes, eval_ds))
        baseline_accuracy = _float_or_none(artifact_io.get_property(baseline, types.INT8_ACCURACY))
        technique = artifact_io.technique_path(tflite_artifact)
        if baseline is None:
            accuracy_drop = None      # this leaf is the baseline: the drop does not apply to it
        elif baseline_accuracy is None or failure_of(baseline) is not None:
            accuracy_drop = math.nan  # the baseline leaf failed: the drop cannot be measured
        else:
            accuracy_drop = baseline_accuracy - int8_accuracy
        arena = _int_or_none(artifact_io.get_property(tflite_artifact, types.ARENA_BYTES))
        unsupported = artifact_io.get_property(tflite_artifact, types.TFLM_UNSUPPORTED_OPS)
        leaf = LeafMetrics(path=technique, int8_accuracy=int8_accuracy,
                           tflite_bytes=len(tflite_bytes), accuracy_drop=accuracy_drop,
                           arena_bytes=arena)
        per_target = [_judge_target(leaf, name, vela, thresholds)
                      for name, vela in _vela_models(input_dict, exec_properties)]
        primary = per_target[0] if per_target else None
        measured = dataclasses.replace(leaf, **(_figures(primary) if primary else {}))
        reasons = primary["reasons"] if primary else missed_thresholds(measured, thresholds)
        blessed = not reasons
        logging.info("%s: accuracy %.4f, blessed=%s, reasons=%s", technique,
                     measured.int8_accuracy, blessed, reasons)

        values = {
            types.INT8_ACCURACY: measured.int8_accuracy,
            types.NUM_EXAMPLES: data.count_examples(eval_ds),
            types.BASELINE_ACCURACY: baseline_accuracy,
            types.ACCURACY_DROP: measured.accuracy_drop,
            types.TECHNIQUE_PATH: technique,
            types.QUANTIZATION: artifact_io.get_property(tflite_artifact, types.QUANTIZATION),
            types.TFLITE_BYTES: measured.tflite_bytes,
            types.ARENA_BYTES: measured.arena_bytes,
            types.TFLM_UNSUPPORTED_OPS: unsupported,
            types.INFERENCE_MS: measured.inference_ms,
            types.SRAM_BYTES: measured.sram_bytes,
            types.FLASH_BYTES: measured.flash_bytes,
            types.TARGET: primary["accelerator_config"] if primary else None,
            types.TFLITE_URI: tflite_artifact.uri,
            types.VELA_URI: primary["vela_uri"] if primary else None,
            types.PER_TARGET: per_target or None,
            types.BLESSED: int(blessed),
            types.REASONS: json.dumps(reasons),
        }
        artifact_io.set_properties(evaluation, values)
        report = {k: v for k, v in values.items()
                  if v is not None and k not in (types.REASONS, types.TFLM_UNSUPPORTED_OPS)}
        report[types.REASONS] = reasons
        report["thresholds"] = {k: v for k, v in dataclasses.asdict(thresholds).items()
                                if v is not None}
        artifact_io.write_bytes(evaluation.uri, METRICS_FILE_NAME,
                                json.dumps(report, indent=2, sort_keys=True).encode())

        # The blessing as tfx/components/evaluator/executor.py writes it (a Pusher reads
        # `blessed`), plus our reasons.
        marker = _write_marker(blessing.uri, blessed)
        artifact_io.set_properties(blessing, {
            tfx_evaluator.ARTIFACT_PROPERTY_BLESSED_KEY: (
                tfx_evaluator.BLESSED_VALUE if blessed else tfx_evaluator.NOT_BLESSED_VALUE),
            types.REASONS: json.dumps(reasons),
            types.TECHNIQUE_PATH: technique,
            tfx_evaluator.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY: tflite_artifact.uri,
            tfx_evaluator.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY: tflite_artifact.id,
        })
        if baseline is not None:  # the baseline leaf's .tflite, as TFX names its baseline model
            artifact_io.set_properties(blessing, {
                tfx_evaluator.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY:
                    artifact_io.get_property(baseline, types.TFLITE_URI),
            })
        logging.info("Blessing %s written to %s", marker, blessing.uri)


def target_names(input_dict: Dict[str, List[tfx_types.Artifact]],
                 exec_properties: Dict[str, Any]) -> list[str]:
    """The targets' names, primary first: the `targets` parameter, else each Vela model's
    accelerator_config."""
    names = exec_properties.get(keys.TARGETS_KEY)
    if names:
        return list(json.loads(names))
    found = []
    for key in _vela_keys(input_dict):
        vela = artifact_io.optional_single(input_dict, key)
        found.append(str(artifact_io.get_property(vela, types.TARGET) or key))
    return found


def _vela_keys(input_dict: Dict[str, List[tfx_types.Artifact]]) -> list[str]:
    extra = sorted((k for k in input_dict if k.startswith(keys.VELA_MODEL_KEY + "_")),
                   key=lambda k: int(k.rsplit("_", 1)[1]))
    return [keys.VELA_MODEL_KEY, *extra]


def _vela_models(input_dict, exec_properties):
    """(target name, VelaModel) for every target that has a Vela model, primary first."""
    pairs = []
    for name, key in zip(target_names(input_dict, exec_properties), _vela_keys(input_dict)):
        vela = artifact_io.optional_single(input_dict, key)
        if vela is not None:
            pairs.append((name, vela))
    return pairs


def _judge_target(leaf: LeafMetrics, name: str, vela: tfx_types.Artifact,
                  thresholds: Thresholds) -> Dict[str, Any]:
    """One target's figures and verdict (a target whose Vela step failed misses every Vela
    threshold, and says why)."""
    figures = {
        "target": name,
        "accelerator_config": artifact_io.get_property(vela, types.TARGET),
        "inference_ms": _float_or_none(artifact_io.get_property(vela, types.INFERENCE_MS)),
        "sram_bytes": _int_or_none(artifact_io.get_property(vela, types.SRAM_BYTES)),
        "flash_bytes": _int_or_none(artifact_io.get_property(vela, types.FLASH_BYTES)),
        "dram_bytes": _int_or_none(artifact_io.get_property(vela, types.DRAM_BYTES)),
        "npu_ops": _int_or_none(artifact_io.get_property(vela, types.NPU_OPS)),
        "cpu_ops": _int_or_none(artifact_io.get_property(vela, types.CPU_OPS)),
        "vela_uri": vela.uri,
    }
    measured = dataclasses.replace(leaf, target=name, **_figures(figures))
    reasons = missed_thresholds(measured, thresholds)
    failure = failure_of(vela)
    if failure is not None:
        figures["failure"] = failure.describe()
        reasons = [failure.describe()] + reasons
    figures.update(blessed=int(not reasons), reasons=reasons)
    return figures


def _figures(target: Dict[str, Any]) -> Dict[str, Any]:
    return {"inference_ms": target["inference_ms"], "sram_bytes": target["sram_bytes"],
            "flash_bytes": target["flash_bytes"]}


def _write_marker(uri: str, blessed: bool) -> str:
    fileio.makedirs(uri)
    marker = tfx_evaluator.BLESSED_FILE_NAME if blessed else tfx_evaluator.NOT_BLESSED_FILE_NAME
    with fileio.open(os.path.join(uri, marker), "w") as f:
        f.write("")
    return marker


def thresholds_from(props: Dict[str, Any]) -> Thresholds:
    """The validated Thresholds from the Evaluator's parameters."""
    return Thresholds(**{name: props.get(name) for name in (
        keys.MIN_ACCURACY_KEY, keys.MAX_ACCURACY_DROP_KEY, keys.MAX_TFLITE_BYTES_KEY,
        keys.MAX_INFERENCE_MS_KEY, keys.MAX_SRAM_BYTES_KEY, keys.MAX_ARENA_BYTES_KEY)})


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
