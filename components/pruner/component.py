"""Pruner: magnitude pruning (TFMOT prune_low_magnitude) of a Keras model, fine-tuned."""
from __future__ import annotations

from typing import Optional, Sequence, Union

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from collabopt.components import keys, params, spec_utils
from collabopt.components.pruner import executor


class PrunerSpec(ComponentSpec):
    """ComponentSpec of the Pruner."""

    PARAMETERS = {
        keys.TARGET_SPARSITY_KEY: ExecutionParameter(type=float),
        keys.PRUNING_SCHEDULE_KEY: ExecutionParameter(type=str),
        keys.INITIAL_SPARSITY_KEY: ExecutionParameter(type=float),
        keys.BEGIN_STEP_KEY: ExecutionParameter(type=int),
        keys.END_STEP_KEY: ExecutionParameter(type=int, optional=True),
        keys.FREQUENCY_KEY: ExecutionParameter(type=int),
        keys.SPARSITY_M_BY_N_KEY: ExecutionParameter(type=str, optional=True),
        keys.PRUNING_POLICY_KEY: ExecutionParameter(type=str, optional=True),
        keys.LAYERS_KEY: ExecutionParameter(type=str, optional=True),
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


class Pruner(base_component.BaseComponent):
    """Prunes a trained Keras model to a target sparsity and fine-tunes it (TFMOT pruning).

    Example
    ```python
    pruner = Pruner(
        model=trainer.outputs['model'],
        examples=example_gen.outputs['examples'],
        target_sparsity=0.5,
        pruning_schedule='polynomial_decay',
        max_epochs=8,        # fine-tunes until recovered, for at most 8 epochs
    )
    clusterer = SparseClusterer(model=pruner.outputs['optimized_model'], ...,
                                preserve_sparsity=True)
    ```

    The input `model` is a standard `Model`: a TFX Trainer's output (`Format-Serving/`) or a
    model saved by tf_keras and brought in with an Importer. Fine-tuning reads the `train` split
    of `examples`; the accuracy is measured on the `eval` split.

    Component `outputs` contains:
     - `optimized_model`: a standard `Model` (Keras SavedModel in `Format-Serving/`, pruning
       wrappers stripped) with custom properties `technique_path` (e.g. `prune`), `parameters`
       (JSON), the measured `sparsity`, `min_kernel_sparsity`, `max_unique_per_kernel`,
       `max_unique_per_channel` and `keras_accuracy`; and how fine-tuning went: `epochs_trained`, `stop_reason` (`recovered`,
       `no_improvement`, `max_epochs` or `fixed_epochs`), and (until recovered)
       `validation_accuracy` and `reference_accuracy` (the input model's, or the
       reference the input recorded when higher: the chain's base model's) on the
       validation slice of the train split.

    The run fails with StructureLostError when a pruned kernel did not reach `target_sparsity`
    (or m/n with `sparsity_m_by_n`), and with UnsupportedLayerError before any training when a
    layer cannot be pruned.
    """

    SPEC_CLASS = PrunerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self,
                 model: types.BaseChannel,
                 examples: types.BaseChannel,
                 target_sparsity: float = 0.5,
                 pruning_schedule: str = "polynomial_decay",
                 initial_sparsity: float = 0.0,
                 begin_step: int = 0,
                 end_step: Optional[int] = None,
                 frequency: int = 10,
                 sparsity_m_by_n: Optional[Union[str, Sequence[int]]] = None,
                 pruning_policy: Optional[str] = None,
                 layers: spec_utils.StrList = None,
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
        """Constructs a Pruner.

        Args:
          model: Channel of a standard `Model` (a trained Keras model).
          examples: Channel of `Examples` with `train` and `eval` splits of tf.Example.
          target_sparsity: Fraction of each pruned kernel set to zero, in [0, 1).
          pruning_schedule: `polynomial_decay` (from `initial_sparsity` to `target_sparsity`
            between `begin_step` and `end_step`) or `constant_sparsity`.
          initial_sparsity: Sparsity at `begin_step` (polynomial_decay only), in [0, 1).
          begin_step: Training step at which pruning starts.
          end_step: Step at which the schedule reaches `target_sparsity`; None ends it with
            the fine-tuning.
          frequency: Prune every `frequency` steps.
          sparsity_m_by_n: Structured sparsity, e.g. `'2:4'` or `(2, 4)`: 2 zeros in every 4
            consecutive weights (TFMOT's sparsity_m_by_n).
          pruning_policy: `'prune_for_latency_on_xnnpack'` (TFMOT PruneForLatencyOnXNNPack), or
            None to prune every prunable layer.
          layers: Layer names to prune (`'conv2,dense1'` or a list); None prunes all.
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
          learning_rate: Fine-tuning learning rate.
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
            keys.TARGET_SPARSITY_KEY: spec_utils.as_float(keys.TARGET_SPARSITY_KEY,
                                                          target_sparsity),
            keys.PRUNING_SCHEDULE_KEY: spec_utils.enum_value(pruning_schedule),
            keys.INITIAL_SPARSITY_KEY: spec_utils.as_float(keys.INITIAL_SPARSITY_KEY,
                                                           initial_sparsity),
            keys.BEGIN_STEP_KEY: begin_step,
            keys.END_STEP_KEY: end_step,
            keys.FREQUENCY_KEY: frequency,
            keys.SPARSITY_M_BY_N_KEY: spec_utils.m_by_n_str(sparsity_m_by_n),
            keys.PRUNING_POLICY_KEY: pruning_policy,
            keys.LAYERS_KEY: spec_utils.str_list_str(layers),
            **spec_utils.training_props(epochs, learning_rate, max_epochs, patience,
                                        recovery_tolerance, validation_fraction, seed),
            **spec_utils.data_props(feature_key, label_key, feature_shape, feature_dtype,
                                    feature_scale, batch_size),
        }
        spec_utils.validate(props, params.pruning_params, params.training_params,
                            params.check_data_params)
        spec = PrunerSpec(
            model=model,
            examples=examples,
            optimized_model=types.Channel(type=standard_artifacts.Model),
            **props)
        super().__init__(spec=spec)
