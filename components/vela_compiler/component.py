"""VelaCompiler: compiles an int8 `.tflite` for an Arm Ethos-U NPU with Vela."""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from collabopt.components import keys, params, spec_utils
from collabopt.components import types as artifact_types
from collabopt.components.vela_compiler import executor


class VelaCompilerSpec(ComponentSpec):
    """ComponentSpec of the VelaCompiler."""

    PARAMETERS = {
        keys.ACCELERATOR_CONFIG_KEY: ExecutionParameter(type=str),
        keys.SYSTEM_CONFIG_KEY: ExecutionParameter(type=str, optional=True),
        keys.MEMORY_MODE_KEY: ExecutionParameter(type=str, optional=True),
        keys.OPTIMISE_KEY: ExecutionParameter(type=str),
        keys.CONFIG_FILES_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        keys.TFLITE_MODEL_KEY: ChannelParameter(type=artifact_types.TFLiteModel),
    }
    OUTPUTS = {
        keys.VELA_MODEL_KEY: ChannelParameter(type=artifact_types.VelaModel),
    }


class VelaCompiler(base_component.BaseComponent):
    """Compiles a `.tflite` with Arm Vela and records cycles, latency, SRAM and flash.

    Example
    ```python
    vela = VelaCompiler(
        tflite_model=converter.outputs['tflite_model'],
        accelerator_config='ethos-u55-128',
        system_config='Ethos_U55_High_End_Embedded',
        memory_mode='Shared_Sram',
        config_files='Arm/vela.ini',
    )
    evaluator = Evaluator(tflite_model=converter.outputs['tflite_model'],
                          examples=example_gen.outputs['examples'],
                          vela_model=vela.outputs['vela_model'], max_inference_ms=5.0)
    ```

    Component `outputs` contains:
     - `vela_model`: a `VelaModel` (`model_vela.tflite`, Vela's `summary.csv` and its console
       log `model_vela_log.txt`) with custom
       properties `technique_path` and `quantization` (the input's), `target`
       (accelerator_config), `system_config`, `memory_mode`, `optimise`, `cycles`,
       `inference_ms`, `sram_bytes`, `flash_bytes`, `original_weight_bytes`,
       `encoded_weight_bytes`, `npu_ops`, `cpu_ops`.

    Operators the NPU cannot run fall back to the CPU (`cpu_ops`); Vela's own words are kept in
    the VelaCompileError a failed compilation raises.
    """

    SPEC_CLASS = VelaCompilerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self,
                 tflite_model: types.BaseChannel,
                 accelerator_config: str = "ethos-u55-128",
                 system_config: Optional[str] = None,
                 memory_mode: Optional[str] = None,
                 optimise: str = "Performance",
                 config_files: spec_utils.StrList = None):
        """Constructs a VelaCompiler.

        Args:
          tflite_model: Channel of a `TFLiteModel` (an int8 `.tflite`, e.g. TFLiteConverter's).
          accelerator_config: Vela's `--accelerator-config`, e.g. `ethos-u55-128`,
            `ethos-u55-256`, `ethos-u65-256`, `ethos-u85-256`.
          system_config: Vela's `--system-config` (a section of a config file); None uses
            the NPU family's default (e.g. `Ethos_U55_High_End_Embedded`), recorded in the
            output's properties.
          memory_mode: Vela's `--memory-mode`, e.g. `Shared_Sram`; None uses the family's
            default.
          optimise: Vela's `--optimise`: `Performance` or `Size`.
          config_files: Vela `--config` files (`'Arm/vela.ini'` or a list, paths or names from
            `vela --list-config-files`) that define `system_config` / `memory_mode`; None uses
            Vela's `Arm/vela.ini`.

        Raises:
          ConfigError: a parameter is not supported, naming the parameter and what is allowed.
        """
        props = {
            keys.ACCELERATOR_CONFIG_KEY: accelerator_config,
            keys.SYSTEM_CONFIG_KEY: system_config,
            keys.MEMORY_MODE_KEY: memory_mode,
            keys.OPTIMISE_KEY: spec_utils.enum_value(optimise),
            keys.CONFIG_FILES_KEY: spec_utils.str_list_str(config_files),
        }
        spec_utils.validate(props, params.vela_options)
        spec = VelaCompilerSpec(
            tflite_model=tflite_model,
            vela_model=types.Channel(type=artifact_types.VelaModel),
            **props)
        super().__init__(spec=spec)
