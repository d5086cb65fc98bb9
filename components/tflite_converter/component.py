"""TFLiteConverter: a Keras model (plain or QAT) -> a `.tflite` flatbuffer, int8 by default."""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from collabopt.components import keys, params, spec_utils
from collabopt.components import types as artifact_types
from collabopt.components.tflite_converter import executor


class TFLiteConverterSpec(ComponentSpec):
    """ComponentSpec of the TFLiteConverter."""

    PARAMETERS = {
        keys.QUANTIZATION_KEY: ExecutionParameter(type=str),
        keys.INT8_IO_KEY: ExecutionParameter(type=bool),
        keys.NUM_CALIBRATION_SAMPLES_KEY: ExecutionParameter(type=int),
        **spec_utils.DATA_PARAMETERS,
    }
    INPUTS = {
        keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        keys.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {
        keys.TFLITE_MODEL_KEY: ChannelParameter(type=artifact_types.TFLiteModel),
    }


class TFLiteConverter(base_component.BaseComponent):
    """Converts a Keras model to TFLite, checking that sparsity and clusters survived.

    Example
    ```python
    converter = TFLiteConverter(
        model=pcqat.outputs['optimized_model'],
        examples=example_gen.outputs['examples'],   # train split calibrates plain models
        quantization='int8',
    )
    vela = VelaCompiler(tflite_model=converter.outputs['tflite_model'])
    ```

    A plain (not quantization-aware) model converted to `int8` / `int16x8` is calibrated with
    `num_calibration_samples` examples of the `train` split of `examples` (post-training
    quantization); a QAT model carries its own quantization ranges. `examples` may be omitted
    for QAT models and for `dynamic_range` / `float16` / `float32`.

    Component `outputs` contains:
     - `tflite_model`: a `TFLiteModel` (`model.tflite`) with custom properties
       `technique_path` (the input model's, + `ptq` when a plain model is quantized here:
       `ptq` for the base model, `prune>ptq`, ...; a QAT model's path is kept, e.g.
       `prune>cluster>pcqat`), `quantization`, `tflite_bytes`, `gzip_bytes`,
       `parameters` (JSON) and — measured from the `.tflite`'s int8 weights — `sparsity`,
       `min_kernel_sparsity`, `max_unique_per_kernel`, `max_unique_per_channel`; and from
       TensorFlow Lite for Microcontrollers' interpreter: `arena_bytes` (the tensor arena it
       needs), `tflm_unsupported_ops` (JSON list) and `tflm_error` when TFLM cannot run it.

    The run fails with StructureLostError when the `.tflite` lost the input model's sparsity or
    has more unique values per channel than its clustered kernels.
    """

    SPEC_CLASS = TFLiteConverterSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self,
                 model: types.BaseChannel,
                 examples: Optional[types.BaseChannel] = None,
                 quantization: str = "int8",
                 int8_io: bool = True,
                 num_calibration_samples: int = 200,
                 batch_size: int = params.DEFAULT_BATCH_SIZE,
                 feature_key: str = params.DEFAULT_FEATURE_KEY,
                 label_key: str = params.DEFAULT_LABEL_KEY,
                 feature_shape: spec_utils.IntList = None,
                 feature_dtype: str = params.DEFAULT_FEATURE_DTYPE,
                 feature_scale: float = 1.0):
        """Constructs a TFLiteConverter.

        Args:
          model: Channel of a standard `Model` (plain Keras, or a PreservingQAT output).
          examples: Optional channel of `Examples`; its `train` split calibrates `int8` /
            `int16x8` conversion of a plain model.
          quantization: `int8` (full integer), `dynamic_range`, `float16`, `int16x8` or
            `float32`.
          int8_io: With `int8`: int8 input and output tensors (as Ethos-U and microcontrollers
            want); False keeps float input / output around the int8 body.
          num_calibration_samples: Examples used to calibrate a plain model.
          batch_size: Batch size used to read the calibration examples.
          feature_key: tf.Example feature holding the model input.
          label_key: tf.Example feature holding the integer class label.
          feature_shape: Model input shape without batch (`'8,8,1'` or a list); None takes it
            from the model.
          feature_dtype: `float32` or `int64`, as stored in the examples.
          feature_scale: Factor applied to the features (e.g. 1/255 for raw pixels).

        Raises:
          ConfigError: a parameter is out of range, naming the parameter and what is allowed.
        """
        props = {
            keys.QUANTIZATION_KEY: spec_utils.enum_value(quantization),
            keys.INT8_IO_KEY: int8_io,
            keys.NUM_CALIBRATION_SAMPLES_KEY: num_calibration_samples,
            **spec_utils.data_props(feature_key, label_key, feature_shape, feature_dtype,
                                    feature_scale, batch_size),
        }
        spec_utils.validate(props, params.quantization_mode, params.num_calibration_samples,
                            params.check_data_params)
        spec = TFLiteConverterSpec(
            model=model,
            examples=examples,
            tflite_model=types.Channel(type=artifact_types.TFLiteModel),
            **props)
        super().__init__(spec=spec)
