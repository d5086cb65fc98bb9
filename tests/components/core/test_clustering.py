"""Clustering: unique values per kernel / channel, all centroid inits, sparsity kept, errors."""
from __future__ import annotations

import pytest

from collabopt.components.core.clustering import (CentroidInitialization, ClusteringParams,
                                        check_clusterable, cluster)
from collabopt.components.core.errors import ConfigError, UnsupportedLayerError, UnsupportedModelError
from collabopt.components.core.keras_compat import keras, tf
from collabopt.components.core.metrics import keras_weight_structure
from collabopt.components.core.pruning import PruningParams, prune
from collabopt.components.core.training import (StopReason, TrainingParams, fine_tuning_of,
                                                keras_accuracy)
from tests.components.core.helpers import ONE_EPOCH, KERNEL_LAYERS, _Scale, _Subclassed



def _stats(model):
    return keras_weight_structure(model).by_layer()


@pytest.fixture(scope="module")
def clustered(trained_digits_model, digits_train_ds):
    keras.utils.set_random_seed(2)
    return cluster(trained_digits_model, digits_train_ds, ClusteringParams(number_of_clusters=8),
                   ONE_EPOCH)


def test_cluster_8_leaves_at_most_8_unique_values_per_kernel(clustered, trained_digits_model):
    stats = _stats(clustered)
    assert set(stats) == set(KERNEL_LAYERS)
    for layer, kernel in stats.items():
        assert kernel.unique_values <= 8, layer
    assert _stats(trained_digits_model)["dense1"].unique_values > 1000  # input untouched


def test_clustered_model_keeps_accuracy_and_layer_names(clustered, trained_digits_model,
                                                        digits_eval_ds):
    assert keras_accuracy(clustered, digits_eval_ds) > 0.8
    assert [layer.name for layer in clustered.layers] == \
        [layer.name for layer in trained_digits_model.layers]


@pytest.mark.parametrize("init", ["linear", "random", "density_based"])
def test_every_centroid_initialization_clusters(init, trained_digits_model, digits_train_ds):
    params = ClusteringParams(number_of_clusters=6, cluster_centroids_init=init,
                              layers=("conv3", "dense1"))
    assert params.cluster_centroids_init is CentroidInitialization(init)
    result = cluster(trained_digits_model, digits_train_ds.take(4), params, ONE_EPOCH)
    stats = _stats(result)
    assert stats["conv3"].unique_values <= 6 and stats["dense1"].unique_values <= 6


def test_cluster_per_channel_limits_unique_values_per_conv_channel(trained_digits_model,
                                                                   digits_train_ds,
                                                                   digits_eval_ds):
    keras.utils.set_random_seed(3)
    result = cluster(trained_digits_model, digits_train_ds,
                     ClusteringParams(number_of_clusters=8, cluster_per_channel=True), ONE_EPOCH)
    stats = _stats(result)
    for conv in ("conv1", "conv2", "conv3"):
        assert stats[conv].max_unique_per_channel <= 8, conv
    # Per-channel: each channel has its own centroids, so the kernel as a whole has more.
    assert stats["conv3"].unique_values > 8
    # Dense kernels ignore cluster_per_channel: clustered per tensor.
    assert stats["dense1"].unique_values <= 8 and stats["logits"].unique_values <= 8
    assert keras_accuracy(result, digits_eval_ds) > 0.8


def test_selective_clustering_touches_only_named_layers(trained_digits_model, digits_train_ds):
    result = cluster(trained_digits_model, digits_train_ds.take(6),
                     ClusteringParams(number_of_clusters=8, layers=("conv2", "dense1")),
                     ONE_EPOCH)
    stats = _stats(result)
    assert stats["conv2"].unique_values <= 8 and stats["dense1"].unique_values <= 8
    for layer in ("conv1", "conv3", "logits"):
        assert stats[layer].unique_values > 64, layer


def test_preserve_sparsity_keeps_the_zeros_of_a_pruned_model(trained_digits_model,
                                                             digits_train_ds, digits_eval_ds):
    keras.utils.set_random_seed(4)
    pruned = prune(trained_digits_model, digits_train_ds, PruningParams(target_sparsity=0.5),
                   ONE_EPOCH)
    result = cluster(pruned, digits_train_ds,
                     ClusteringParams(number_of_clusters=8, preserve_sparsity=True), ONE_EPOCH)
    before, after = _stats(pruned), _stats(result)
    for layer in KERNEL_LAYERS:
        assert after[layer].sparsity >= before[layer].sparsity - 0.005, layer
        assert after[layer].sparsity >= 0.48, layer
        assert after[layer].unique_values <= 8, layer
    assert keras_accuracy(result, digits_eval_ds) > 0.8


def test_subclassed_model_is_refused_before_training():
    model = _Subclassed()
    model(tf.zeros((1, 8, 8, 1)))
    with pytest.raises(UnsupportedModelError, match="Subclassed"):
        check_clusterable(model, ClusteringParams())


def test_custom_layer_with_weights_is_named_with_the_way_out():
    inputs = keras.Input(shape=(8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = _Scale(name="scale")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="dense")(x))
    with pytest.raises(UnsupportedLayerError, match=r"(?s)'scale' \(_Scale\).*`layers`") as info:
        check_clusterable(model, ClusteringParams())
    assert info.value.layers == ["scale"]
    check_clusterable(model, ClusteringParams(layers=("conv", "dense")))


def test_conv1d_lstm_and_weightless_layers_pass_the_check():
    inputs = keras.Input(shape=(16, 4))
    x = keras.layers.Conv1D(8, 3, name="conv1d")(inputs)
    x = keras.layers.LSTM(8, return_sequences=True, name="lstm")(x)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.Flatten()(x)
    check_clusterable(keras.Model(inputs, keras.layers.Dense(3)(x)), ClusteringParams())


def test_named_conv_with_too_few_weights_per_channel_is_refused(trained_digits_model):
    # conv1 has 3x3x1 = 9 weights per output channel: not enough for 16 clusters per channel.
    params = ClusteringParams(number_of_clusters=16, cluster_per_channel=True,
                              layers=("conv1", "conv2"))
    with pytest.raises(UnsupportedLayerError, match="conv1") as info:
        check_clusterable(trained_digits_model, params)
    assert info.value.layers == ["conv1"]


def test_unknown_layer_name_is_a_config_error(trained_digits_model):
    with pytest.raises(ConfigError, match="dense9"):
        check_clusterable(trained_digits_model, ClusteringParams(layers=("dense9",)))


@pytest.mark.parametrize("kwargs, field", [
    ({"number_of_clusters": 1}, "number_of_clusters"),
    ({"number_of_clusters": 2, "preserve_sparsity": True}, "number_of_clusters"),
    ({"number_of_clusters": 1000}, "number_of_clusters"),
    ({"number_of_clusters": 8.0}, "number_of_clusters"),
    ({"cluster_centroids_init": "kmeans"}, "cluster_centroids_init"),
    ({"preserve_sparsity": "yes"}, "preserve_sparsity"),
    ({"cluster_per_channel": 1}, "cluster_per_channel"),
    ({"layers": []}, "layers"),
])
def test_bad_clustering_params_raise_config_error(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        ClusteringParams(**kwargs)


def test_clustering_and_qat_until_recovered_record_how_they_stopped(trained_digits_model,
                                                                    digits_train_validation):
    from collabopt.components.core.qat import quantize_aware_train

    train, validation = digits_train_validation
    training = TrainingParams(max_epochs=3, patience=1)
    clustered = cluster(trained_digits_model, train, ClusteringParams(number_of_clusters=16),
                        training, validation_ds=validation)
    qat_model = quantize_aware_train(clustered, train, "cqat", training, validation_ds=validation)
    for model, before in ((clustered, trained_digits_model), (qat_model, clustered)):
        record = fine_tuning_of(model)
        assert 1 <= record.epochs_trained <= 3
        assert record.reference_accuracy == pytest.approx(keras_accuracy(before, validation))
        if record.stop_reason is StopReason.RECOVERED:
            assert record.validation_accuracy >= record.reference_accuracy - 0.005
        else:
            assert record.stop_reason in (StopReason.NO_IMPROVEMENT, StopReason.MAX_EPOCHS)
    assert _stats(qat_model)["dense1"].unique_values <= 16  # CQAT kept the clusters
