"""SparseClusterer: weight clustering (TFMOT cluster_weights), sparsity-preserving if asked."""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from collabopt.components import keys, params, spec_utils
from collabopt.components.sparse_clusterer import executor


class SparseClustererSpec(ComponentSpec):
    """ComponentSpec of the SparseClusterer."""

    PARAMETERS = {
        keys.NUMBER_OF_CLUSTERS_KEY: ExecutionParameter(type=int),
        keys.CLUSTER_CENTROIDS_INIT_KEY: ExecutionParameter(type=str),
        keys.PRESERVE_SPARSITY_KEY: ExecutionParameter(type=bool),
        keys.CLUSTER_PER_CHANNEL_KEY: ExecutionParameter(type=bool),
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


class SparseClusterer(base_component.BaseComponent):
    """Clusters the weights of a Keras model and fine-tunes the centroids (TFMOT clustering).

    Example
    ```python
    clusterer = SparseClusterer(
        model=pruner.outputs['optimized_model'],
        examples=example_gen.outputs['examples'],
        number_of_clusters=16,
        preserve_sparsity=True,   # keep the zeros of the pruned input
    )
    pcqat = PreservingQAT(model=clusterer.outputs['optimized_model'], ..., mode='pcqat')
    ```

    With `preserve_sparsity=True` on a pruned input this is TFMOT's sparsity-preserving
    clustering: the zeros stay zeros (and are checked to), so a following PreservingQAT in
    `pcqat` mode keeps both.

    Component `outputs` contains:
     - `optimized_model`: a standard `Model` (Keras SavedModel in `Format-Serving/`, clustering
       wrappers stripped) with custom properties `technique_path` (input's path + `cluster`),
       `parameters` (JSON), the measured `sparsity`, `min_kernel_sparsity`,
       `max_unique_per_kernel`, `max_unique_per_channel` and `keras_accuracy`; and how fine-tuning went: `epochs_trained`, `stop_reason` (`recovered`,
       `no_improvement`, `max_epochs` or `fixed_epochs`), and (until recovered)
       `validation_accuracy` and `reference_accuracy` (the input model's, or the
       reference the input recorded when higher: the chain's base model's) on the
       validation slice of the train split.

    The run fails with StructureLostError when a clustered kernel holds more than
    `number_of_clusters` values (with `preserve_sparsity`, zero is one of them), or when
    `preserve_sparsity=True` lost the input's zeros; with UnsupportedLayerError before any
    training when a layer cannot be clustered.
    """

    SPEC_CLASS = SparseClustererSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self,
                 model: types.BaseChannel,
                 examples: types.BaseChannel,
                 number_of_clusters: int = 8,
                 cluster_centroids_init: str = "kmeans_plus_plus",
                 preserve_sparsity: bool = False,
                 cluster_per_channel: bool = False,
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
        """Constructs a SparseClusterer.

        Args:
          model: Channel of a standard `Model` (trained, pruned or not).
          examples: Channel of `Examples` with `train` and `eval` splits of tf.Example.
          number_of_clusters: Unique weight values per kernel (per channel with
            `cluster_per_channel`), > 1.
          cluster_centroids_init: `kmeans_plus_plus`, `linear`, `random` or `density_based`.
          preserve_sparsity: Keep the zeros of a pruned input (sparsity-preserving clustering).
          cluster_per_channel: Cluster each output channel of Conv2D kernels separately.
          layers: Layer names to cluster (`'conv2,dense1'` or a list); None clusters all.
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
            keys.NUMBER_OF_CLUSTERS_KEY: number_of_clusters,
            keys.CLUSTER_CENTROIDS_INIT_KEY: spec_utils.enum_value(cluster_centroids_init),
            keys.PRESERVE_SPARSITY_KEY: preserve_sparsity,
            keys.CLUSTER_PER_CHANNEL_KEY: cluster_per_channel,
            keys.LAYERS_KEY: spec_utils.str_list_str(layers),
            **spec_utils.training_props(epochs, learning_rate, max_epochs, patience,
                                        recovery_tolerance, validation_fraction, seed),
            **spec_utils.data_props(feature_key, label_key, feature_shape, feature_dtype,
                                    feature_scale, batch_size),
        }
        spec_utils.validate(props, params.clustering_params, params.training_params,
                            params.check_data_params)
        spec = SparseClustererSpec(
            model=model,
            examples=examples,
            optimized_model=types.Channel(type=standard_artifacts.Model),
            **props)
        super().__init__(spec=spec)
