"""TFLiteConverter executor: read the model (and calibration examples), call core.tflite."""
from __future__ import annotations

from typing import Any, Dict, List

from absl import logging
from tfx import types as tfx_types

from collabopt.components import artifact_io, keys, params, types
from collabopt.components.core.leaves import FINAL_STEPS, SEPARATOR
from collabopt.components.failure import LeafStepExecutor

PTQ = "ptq"


class Executor(LeafStepExecutor):
    """Converts with core.tflite, measures the `.tflite` weights and checks what was kept."""

    LEAF_INPUT_KEYS = (keys.MODEL_KEY,)
    STEP = "TFLiteConverter"

    def leaf_path(self, input_dict, exec_properties):
        # Without loading the model: a path that already ends in a (QAT) leaf step stays as it is.
        model_artifact = artifact_io.single(input_dict, keys.MODEL_KEY)
        path = artifact_io.technique_path(model_artifact)
        if path.rsplit(SEPARATOR, 1)[-1] in FINAL_STEPS or \
                params.quantization_mode(exec_properties).value == "float32":
            return path
        return artifact_io.technique_path(model_artifact, PTQ)

    def run(self, input_dict: Dict[str, List[tfx_types.Artifact]],
            output_dict: Dict[str, List[tfx_types.Artifact]],
            exec_properties: Dict[str, Any]) -> None:
        from collabopt.components.core import data, metrics, preservation, tflite, tflm

        model_artifact = artifact_io.single(input_dict, keys.MODEL_KEY)
        output = artifact_io.single(output_dict, keys.TFLITE_MODEL_KEY)
        mode = params.quantization_mode(exec_properties)
        int8_io = bool(exec_properties.get(keys.INT8_IO_KEY, True))

        model = artifact_io.load_model(model_artifact)
        representative = None
        if input_dict.get(keys.EXAMPLES_KEY):
            train_ds = artifact_io.split_dataset(
                input_dict[keys.EXAMPLES_KEY], params.TRAIN_SPLIT, exec_properties,
                artifact_io.model_input_shape(model))
            representative = data.representative_dataset(
                train_ds, params.num_calibration_samples(exec_properties))

        tflite_bytes = tflite.convert(model, mode, representative_data=representative,
                                      int8_io=int8_io)
        artifact_io.write_bytes(output.uri, types.TFLITE_FILE_NAME, tflite_bytes)

        before = metrics.keras_weight_structure(model)
        after = metrics.tflite_weight_structure(tflite_bytes)
        step = f"TFLiteConverter({mode.value})"
        if after.kernels:
            preservation.check_sparsity_kept(before, after, step=step, hint=_HINT)
            preservation.check_clusters_kept(before, after, step=step, per_channel=True,
                                             hint=_HINT)
        else:
            logging.info("%s: no int8 weight tensors to measure in the .tflite", step)
        logging.info("Converted to %s: %d bytes", mode.value, len(tflite_bytes))

        # A plain model quantized here is post-training quantization: its leaf is `<path>>ptq`
        # (`ptq` for the base model); a QAT model was quantized by PreservingQAT already.
        micro = tflm.measure(tflite_bytes)
        logging.info("TFLM: arena %s bytes, unsupported ops %s", micro.arena_bytes,
                     list(micro.unsupported_ops))

        ptq = not tflite.is_qat_model(model) and mode != tflite.QuantizationMode.FLOAT32
        artifact_io.set_properties(output, {
            types.TECHNIQUE_PATH: artifact_io.technique_path(model_artifact,
                                                             PTQ if ptq else None),
            types.QUANTIZATION: mode.value,
            types.PARAMETERS: params.parameters_json(exec_properties),
            types.TFLITE_BYTES: len(tflite_bytes),
            types.GZIP_BYTES: int(metrics.gzip_size(tflite_bytes)),
            types.ARENA_BYTES: micro.arena_bytes,
            types.TFLM_UNSUPPORTED_OPS: list(micro.unsupported_ops),
            types.TFLM_ERROR: micro.error,
            **artifact_io.structure_properties(after),
        })


_HINT = ("Likely cause: the converter rewrote the weights (e.g. a QAT model whose kernels were "
         "re-quantized per tensor, or a model saved with its optimization wrappers). Fix: convert "
         "the stripped model from Pruner / SparseClusterer, or a PreservingQAT model in the "
         "matching preserving mode.")
