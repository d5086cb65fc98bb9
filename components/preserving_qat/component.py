"""PreservingQAT: quantization-aware training that keeps sparsity and / or clusters (TFMOT)."""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from collabopt.components import keys, params, spec_utils
from collabopt.components.preserving_qat import executor


class PreservingQATSpec(ComponentSpec):
    """ComponentSpec of PreservingQAT."""

    PARAMETERS = {
        keys.MODE_KEY: ExecutionParameter(type=str),
        **spec_utils.TRAINING_PARAMETERS,
        **spec_utils.DATA_PARAMETERS,
    }
    INPUTS = {
        keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        keys.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {
        keys.OPTIMIZED_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
    }


class PreservingQAT(base_component.BaseComponent):
    """Quantization-aware training: plain QAT, or PQAT / CQAT / PCQAT that preserve the structure.

    Example
    ```python
    pcqat = PreservingQAT(
        model=clusterer.outputs['optimized_model'],   # pruned, then clustered
        examples=example_gen.outputs['examples'],
        mode='pcqat',                                  # or 'auto': chosen from the weights
        max_epochs=8,        # fine-tunes until recovered, for at most 8 epochs
    )
    converter = TFLiteConverter(model=pcqat.outputs['optimized_model'],
                                examples=example_gen.outputs['examples'])
    ```

    Modes follow TFMOT's collaborative optimization: `qat` (plain), `pqat` (keeps the zeros of a
    pruned model), `cqat` (keeps the clusters), `pcqat` (keeps both), `auto` (picks one from the
    measured sparsity and unique values of the input).

    Component `outputs` contains:
     - `optimized_model`: a standard `Model` (the QAT Keras model in `Format-Serving/`, ready
       for TFLiteConverter) with custom properties `technique_path` (input's path + the resolved
       mode, e.g. `prune>cluster>pcqat`), `qat_mode`, `parameters` (JSON), the measured
       `sparsity`, `min_kernel_sparsity`, `max_unique_per_kernel`, `max_unique_per_channel` and
       `keras_accuracy`; and how fine-tuning went: `epochs_trained`, `stop_reason` (`recovered`,
       `no_improvement`, `max_epochs` or `fixed_epochs`), and (until recovered)
       `validation_accuracy` and `reference_accuracy` (the input model's, or the
       reference the input recorded when higher: the chain's base model's) on the
       validation slice of the train split.

    The run fails with StructureLostError when `pqat` / `pcqat` lost the input's sparsity or
    `cqat` / `pcqat` added unique values to its clustered kernels.
    """

    SPEC_CLASS = PreservingQATSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self,
                 model: types.BaseChannel,
                 examples: types.BaseChannel,
                 mode: str = "auto",
                 epochs: Optional[int] = params.DEFAULT_EPOCHS,
                 max_epochs: int = params.DEFAULT_MAX_EPOCHS,
                 patience: int = params.DEFAULT_PATIENCE,
                 recovery_tolerance: float = params.DEFAULT_RECOVERY_TOLERANCE,
                 validation_fraction: float = params.DEFAULT_VALIDATION_FRACTION,
                 seed: int = params.DEFAULT_SEED,
                 learning_rate: float = params.DEFAULT_LEARNING_RATE,
                 batch_size: int = params.DEFAULT_BATCH_SIZE,
                 feature_key: str = params.DEFAULT_FEATURE_KEY,
                 label_key: str = params.DEFAULT_LABEL_KEY,
                 feature_shape: spec_utils.IntList = None,
                 feature_dtype: str = params.DEFAULT_FEATURE_DTYPE,
                 feature_scale: float = 1.0):
        """Constructs a PreservingQAT.

        Args:
          model: Channel of a standard `Model` (plain, pruned, clustered or both).
          examples: Channel of `Examples` with `train` and `eval` splits of tf.Example.
          mode: `qat`, `pqat`, `cqat`, `pcqat` or `auto`.
          epochs: None (default) fine-tunes until the accuracy on a validation slice
            of the train split has recovered (see max_epochs .. validation_fraction);
            an integer trains exactly that many epochs on the whole train split.
          max_epochs: Cap on fine-tuning until recovered.
          patience: Epochs without a lower validation loss before stopping.
          recovery_tolerance: How far below the reference (the incoming model's validation
            accuracy, or the reference it recorded when higher)
            the step may stay and count as recovered.
          validation_fraction: Share of the train split held out for validation.
          seed: Seeds TensorFlow, NumPy and Python before the step (weights, centroids,
            shuffling), so the same inputs give the same model.
          learning_rate: Training learning rate.
          batch_size: Batch size of training and evaluation.
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
            keys.MODE_KEY: spec_utils.enum_value(mode),
            **spec_utils.training_props(epochs, learning_rate, max_epochs, patience,
                                        recovery_tolerance, validation_fraction, seed),
            **spec_utils.data_props(feature_key, label_key, feature_shape, feature_dtype,
                                    feature_scale, batch_size),
        }
        spec_utils.validate(props, params.qat_mode, params.training_params,
                            params.check_data_params)
        spec = PreservingQATSpec(
            model=model,
            examples=examples,
            optimized_model=types.Channel(type=standard_artifacts.Model),
            **props)
        super().__init__(spec=spec)
