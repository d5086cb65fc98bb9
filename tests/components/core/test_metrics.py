"""Weight structure (Keras, inside TFMOT wrappers, int8 TFLite), gzip size and TFLite accuracy."""
from __future__ import annotations

import numpy as np
import pytest

from collabopt.components.core import metrics
from collabopt.components.core.data import dataset_from_arrays
from collabopt.components.core.errors import ConfigError
from collabopt.components.core.keras_compat import keras, tf, tfmot
from collabopt.components.core.tflite import QuantizationMode, convert

K = 5  # distinct values in every hand-set kernel (zero included)


def _k_valued(shape, seed, zero_fraction=0.5):
    """A kernel with exactly K distinct values: zeros and K - 1 well-separated values."""
    rng = np.random.default_rng(seed)
    values = np.array([-1.0, -0.5, 0.5, 1.0], dtype=np.float32)  # K - 1 non-zero values
    flat = np.zeros(int(np.prod(shape)), dtype=np.float32)
    nonzero = rng.permutation(flat.size)[: int(round(flat.size * (1 - zero_fraction)))]
    flat[nonzero] = rng.choice(values, size=nonzero.size)
    flat[nonzero[: len(values)]] = values  # every value present at least once
    return flat.reshape(shape)


def _channel_ramp_depthwise(shape):
    """Depthwise kernel (h, w, channels, 1) whose channel c holds exactly c + 1 distinct values."""
    kernel = np.zeros(shape, dtype=np.float32)
    for c in range(shape[2]):
        levels = np.arange(1, c + 2, dtype=np.float32) / (c + 1)  # c + 1 values, max 1.0
        kernel[:, :, c, 0] = np.resize(levels, shape[:2])
    return kernel


def _tiny_model():
    inputs = keras.Input((6, 6, 2), name="x")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(3, name="fc")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    conv, dw, fc = (model.get_layer(n) for n in ("conv", "dw", "fc"))
    conv.set_weights([_k_valued((3, 3, 2, 4), seed=1), np.zeros(4, np.float32)])
    dw.set_weights([_channel_ramp_depthwise((3, 3, 4, 1)), np.zeros(4, np.float32)])
    fc.set_weights([_k_valued((16, 3), seed=2, zero_fraction=0.25), np.zeros(3, np.float32)])
    return model


def _clone(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _representative():
    rng = np.random.default_rng(0)

    def generate():
        for _ in range(20):
            yield [rng.random((1, 6, 6, 2), dtype=np.float32)]

    return generate


@pytest.fixture(scope="module")
def tiny_model():
    return _tiny_model()


@pytest.fixture(scope="module")
def tiny_int8(tiny_model):
    return convert(tiny_model, QuantizationMode.INT8, _representative())


def test_kernel_stats_counts_zeros_and_unique_values_per_channel():
    kernel = np.array([[0.0, 1.0], [0.0, 2.0], [3.0, 2.0]], dtype=np.float32)  # 2 output channels
    stats = metrics.kernel_stats("k", kernel)
    assert (stats.size, stats.unique_values, stats.max_unique_per_channel) == (6, 4, 2)
    assert stats.sparsity == pytest.approx(2 / 6)


def test_keras_structure_of_hand_set_kernels(tiny_model):
    structure = metrics.keras_weight_structure(tiny_model)
    by_layer = structure.by_layer()
    assert list(by_layer) == ["conv", "dw", "fc"]
    assert by_layer["conv"].sparsity == pytest.approx(0.5)
    assert by_layer["fc"].sparsity == pytest.approx(0.25)
    assert by_layer["conv"].unique_values == K and by_layer["fc"].unique_values == K
    assert by_layer["dw"].max_unique_per_channel == 4  # channel 3 holds 4 values
    assert by_layer["dw"].unique_values == 6  # 1, 1/2, 1/3, 2/3, 1/4, 3/4 over the 4 channels
    assert structure.max_unique_per_kernel == 6
    assert structure.max_unique_per_channel <= K
    assert structure.min_kernel_sparsity == 0.0  # the depthwise kernel has no zeros
    total = sum(k.size for k in structure.kernels)
    zeros = sum(k.size * k.sparsity for k in structure.kernels)
    assert structure.sparsity == pytest.approx(zeros / total)


def test_int8_tflite_keeps_zeros_and_at_most_k_values_per_channel(tiny_model, tiny_int8):
    keras_kernels = metrics.keras_weight_structure(tiny_model).by_layer()
    tflite_kernels = metrics.tflite_weight_structure(tiny_int8).kernels
    assert [k.size for k in tflite_kernels] == [k.size for k in keras_kernels.values()]
    for keras_k, tflite_k in zip(keras_kernels.values(), tflite_kernels):
        assert tflite_k.sparsity == pytest.approx(keras_k.sparsity)  # zeros stay exact zeros
        assert tflite_k.max_unique_per_channel <= keras_k.max_unique_per_channel
    conv, dw, fc = tflite_kernels
    assert conv.max_unique_per_channel <= K and fc.max_unique_per_channel <= K
    # Depthwise output channels are on TFLite axis 3: channel c keeps its c + 1 levels exactly.
    assert dw.max_unique_per_channel == 4


def test_tflite_kernels_are_named_after_keras_layers(tiny_int8):
    names = [k.layer for k in metrics.tflite_weight_structure(tiny_int8).kernels]
    assert names[:2] == ["conv", "dw"]
    assert len(set(names)) == 3 and all(names)


def test_keras_structure_inside_tfmot_wrappers(tiny_model):
    expected = metrics.keras_weight_structure(tiny_model)

    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        _clone(tiny_model), pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
    assert metrics.keras_weight_structure(pruned) == expected

    quantized = tfmot.quantization.keras.quantize_model(_clone(tiny_model))
    assert metrics.keras_weight_structure(quantized) == expected  # the float kernels

    cluster = tfmot.clustering.keras
    clustered = cluster.cluster_weights(
        _clone(tiny_model), number_of_clusters=3,
        cluster_centroids_init=cluster.CentroidInitialization.LINEAR)
    by_layer = metrics.keras_weight_structure(clustered).by_layer()
    assert list(by_layer) == ["conv", "dw", "fc"]
    assert by_layer["conv"].unique_values <= 3 and by_layer["fc"].unique_values <= 3


def test_per_channel_clustering_is_measured_per_channel(tiny_model):
    cluster = tfmot.clustering.keras
    rng = np.random.default_rng(3)
    model = _clone(tiny_model)
    model.get_layer("conv").set_weights([rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
                                         np.zeros(4, np.float32)])
    clustered = cluster.cluster_weights(
        model, number_of_clusters=3, cluster_per_channel=True,
        cluster_centroids_init=cluster.CentroidInitialization.KMEANS_PLUS_PLUS)
    conv = metrics.keras_weight_structure(clustered).by_layer()["conv"]
    assert conv.max_unique_per_channel <= 3
    assert conv.unique_values > 3  # each channel has its own centroids


def test_gzip_size_rewards_structure():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert metrics.gzip_size(bytes(4096)) < 100
    assert metrics.gzip_size(noise) >= len(noise)


def test_tflite_accuracy_runs_a_fixed_batch_model_per_sample(tiny_model):
    # A batch-1 input cannot be resized: tflite_accuracy runs it sample by sample.
    model = keras.models.clone_model(
        tiny_model, input_tensors=keras.Input((6, 6, 2), batch_size=1))
    model.set_weights(tiny_model.get_weights())
    tflite_bytes = convert(model, QuantizationMode.FLOAT32)
    rng = np.random.default_rng(2)
    x = rng.random((45, 6, 6, 2), dtype=np.float32)
    y = np.argmax(tiny_model.predict(x, verbose=0), axis=1)
    y[:9] = (y[:9] + 1) % 3  # 9 of 45 wrong on purpose
    one_hot = tf.data.Dataset.from_tensor_slices((x, np.eye(3, dtype=np.float32)[y])).batch(16)
    assert metrics.tflite_accuracy(tflite_bytes, one_hot) == pytest.approx(36 / 45)


def test_tflite_accuracy_of_int8_model_batches_and_quantizes_input(tiny_model, tiny_int8):
    rng = np.random.default_rng(1)
    x = rng.random((70, 6, 6, 2), dtype=np.float32)
    y = np.argmax(tiny_model.predict(x, verbose=0), axis=1)  # labels = the float model's answers
    accuracy = metrics.tflite_accuracy(tiny_int8, dataset_from_arrays(x, y, batch_size=32))
    assert accuracy >= 0.85


def test_tflite_metrics_reject_non_tflite_bytes():
    with pytest.raises(ConfigError, match="TFL3"):
        metrics.tflite_weight_structure(b"not a model")
