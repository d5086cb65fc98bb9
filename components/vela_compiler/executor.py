"""VelaCompiler executor: read the `.tflite`, call core.vela, copy Vela's outputs to the URI."""
from __future__ import annotations

from typing import Any, Dict, List

from absl import logging
from tfx import types as tfx_types

from collabopt.components import artifact_io, keys, params, types
from collabopt.components.failure import LeafStepExecutor, mark_failed


class Executor(LeafStepExecutor):
    """Compiles with core.vela into the output URI and records Vela's performance estimate."""

    LEAF_INPUT_KEYS = (keys.TFLITE_MODEL_KEY,)
    STEP = "VelaCompiler"

    def leaf_path(self, input_dict, exec_properties):
        return artifact_io.technique_path(artifact_io.single(input_dict, keys.TFLITE_MODEL_KEY))

    def record_failure(self, output_dict, failure, path, exec_properties):
        mark_failed(output_dict[keys.VELA_MODEL_KEY], failure, path, {
            types.TARGET: exec_properties.get(keys.ACCELERATOR_CONFIG_KEY)})

    def run(self, input_dict: Dict[str, List[tfx_types.Artifact]],
            output_dict: Dict[str, List[tfx_types.Artifact]],
            exec_properties: Dict[str, Any]) -> None:
        from collabopt.components.core import vela

        tflite_artifact = artifact_io.single(input_dict, keys.TFLITE_MODEL_KEY)
        output = artifact_io.single(output_dict, keys.VELA_MODEL_KEY)
        options = params.vela_options(exec_properties)

        tflite_bytes = artifact_io.read_bytes(tflite_artifact.uri, types.TFLITE_FILE_NAME)
        # core.vela runs Vela in a private local directory and copies its outputs to the URI
        # (local or remote) under Vela's names; give them the artifact's fixed names.
        result = vela.compile_model(tflite_bytes, options, output.uri, name="model")
        artifact_io.rename_file(result.tflite_path, output.uri, types.VELA_TFLITE_FILE_NAME)
        artifact_io.rename_file(result.summary_csv_path, output.uri, types.VELA_SUMMARY_FILE_NAME)
        summary = result.summary
        logging.info("Vela (%s): %d cycles, %.3f ms, %d NPU / %d CPU ops",
                     options.accelerator_config, summary.cycles, summary.inference_ms,
                     summary.npu_ops, summary.cpu_ops)

        artifact_io.set_properties(output, {
            types.TECHNIQUE_PATH: artifact_io.technique_path(tflite_artifact),
            types.QUANTIZATION: artifact_io.get_property(tflite_artifact, types.QUANTIZATION),
            types.PARAMETERS: params.parameters_json(exec_properties),
            types.TARGET: options.accelerator_config,
            types.SYSTEM_CONFIG: options.system_config,   # VelaOptions resolves the defaults
            types.MEMORY_MODE: options.memory_mode,
            types.OPTIMISE: options.optimise.value,
            types.CYCLES: int(summary.cycles),
            types.INFERENCE_MS: float(summary.inference_ms),
            types.SRAM_BYTES: int(summary.sram_bytes),
            types.FLASH_BYTES: int(summary.flash_bytes),
            types.DRAM_BYTES: int(summary.dram_bytes),
            types.ORIGINAL_WEIGHT_BYTES: int(summary.original_weight_bytes),
            types.ENCODED_WEIGHT_BYTES: int(summary.encoded_weight_bytes),
            types.NPU_OPS: int(summary.npu_ops),
            types.CPU_OPS: int(summary.cpu_ops),
        })
