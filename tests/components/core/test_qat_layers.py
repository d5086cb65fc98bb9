"""QAT for the layers TFMOT's 8-bit registry lacks: Conv1D (per output channel, as Conv2D),
DepthwiseConv1D, MaxPooling1D, Multiply, Subtract — and the 1-D pooling layers it has — down to
a full-integer `.tflite` that Vela places entirely on the NPU, keeping sparsity and clusters."""
from __future__ import annotations

import numpy as np
import pytest

from collabopt.components.core import preservation, vela
from collabopt.components.core.clustering import ClusteringParams, cluster
from collabopt.components.core.data import dataset_from_arrays
from collabopt.components.core.keras_compat import keras
from collabopt.components.core.metrics import (keras_weight_structure, tflite_accuracy,
                                               tflite_weight_structure)
from collabopt.components.core.pruning import PruningParams, prune
from collabopt.components.core.qat import (check_quantizable, load_model, quantize_aware_train,
                                           save_model)
from collabopt.components.core.tflite import convert
from collabopt.components.core.training import TrainingParams, keras_accuracy
from collabopt.pipelines import zoo

L = keras.layers
ONE_EPOCH = TrainingParams(epochs=1, learning_rate=1e-4)
KERNELS_1D = ("conv1", "conv2", "dense1", "logits")  # of zoo.cnn_1d


def _vela_cpu_ops(tflite_bytes, tmp_path) -> int:
    return vela.compile_model(tflite_bytes, vela.VelaOptions(), str(tmp_path)).summary.cpu_ops


@pytest.fixture(scope="module")
def signals():
    (x, y), (x_eval, y_eval) = zoo.signals_1d(num_examples=1000, seed=1)
    return (dataset_from_arrays(x, y, batch_size=32, shuffle=True),
            dataset_from_arrays(x_eval, y_eval, batch_size=100))


@pytest.fixture(scope="module")
def pruned_clustered_1d(signals):
    """zoo.cnn_1d (Conv1D, MaxPooling1D, Flatten, Dense) trained, pruned to 50 % and clustered
    to 8 values with the zeros kept."""
    train, _ = signals
    keras.utils.set_random_seed(0)
    model = zoo.cnn_1d(input_shape=(128, 1), num_classes=8)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train, epochs=6, verbose=0)
    pruned = prune(model, train, PruningParams(target_sparsity=0.5), ONE_EPOCH)
    clustered = cluster(pruned, train, ClusteringParams(number_of_clusters=8,
                                                        preserve_sparsity=True), ONE_EPOCH)
    return pruned, clustered


def test_pcqat_of_a_1d_cnn_keeps_sparsity_and_clusters_in_the_int8_tflite(
        pruned_clustered_1d, signals, tmp_path):
    _, clustered = pruned_clustered_1d
    train, eval_ds = signals
    keras.utils.set_random_seed(1)
    pcqat = quantize_aware_train(clustered, train, "pcqat", ONE_EPOCH)
    tflite = convert(pcqat, "int8")
    before, after = keras_weight_structure(clustered), tflite_weight_structure(tflite)
    pairs = preservation.check_sparsity_kept(before, after, step="int8")
    assert len(pairs) == len(KERNELS_1D)
    for b, a in pairs:
        assert a.sparsity >= 0.48, a.layer
        # Conv1D converts to a CONV_2D with per-output-channel scales, as Conv2D does.
        assert a.max_unique_per_channel <= 8, a.layer
    conv = {b.layer: a for b, a in pairs}["conv2"]
    assert conv.unique_values > conv.max_unique_per_channel  # per-channel int8 scales
    assert tflite_accuracy(tflite, eval_ds) > keras_accuracy(clustered, eval_ds) - 0.1
    assert _vela_cpu_ops(tflite, tmp_path) == 0


def test_pqat_keeps_the_zeros_of_a_pruned_1d_cnn(pruned_clustered_1d, signals):
    pruned, _ = pruned_clustered_1d
    result = keras_weight_structure(quantize_aware_train(pruned, signals[0].take(10), "pqat",
                                                         ONE_EPOCH)).by_layer()
    for layer in KERNELS_1D:
        assert result[layer].sparsity >= 0.49, layer
        assert result[layer].unique_values > 16, layer  # PQAT keeps zeros, not values


def _many_1d_layers() -> keras.Model:
    inputs = keras.Input(shape=(32, 4), name="signal")
    x = L.Conv1D(16, 5, padding="same", use_bias=False, name="conv_bn")(inputs)
    x = L.BatchNormalization(name="conv_bn_bn")(x)  # folded into the convolution, as for Conv2D
    x = L.ReLU(name="conv_bn_relu")(x)
    gate = L.Conv1D(16, 1, activation="sigmoid", name="gate")(x)
    x = L.Multiply(name="gated")([x, gate])
    x = L.MaxPooling1D(2, name="max_pool")(x)
    x = L.Subtract(name="difference")([x, L.Conv1D(16, 1, name="pointwise")(x)])
    x = L.AveragePooling1D(2, name="avg_pool")(x)
    x = L.DepthwiseConv1D(3, depth_multiplier=2, activation="relu", name="depthwise")(x)
    x = L.Conv1D(16, 3, padding="causal", strides=1, activation="relu", name="causal")(x)
    x = L.Concatenate(name="pools")([L.GlobalAveragePooling1D(name="gap")(x),
                                     L.GlobalMaxPooling1D(name="gmp")(x)])
    return keras.Model(inputs, L.Dense(4, name="logits")(x), name="many_1d_layers")


def _pooling_2d() -> keras.Model:
    inputs = keras.Input(shape=(8, 8, 1))
    x = L.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = L.Concatenate()([L.GlobalAveragePooling2D()(x), L.GlobalMaxPooling2D()(x)])
    return keras.Model(inputs, L.Dense(4, name="logits")(x), name="pooling_2d")


@pytest.mark.parametrize("build", [_many_1d_layers, _pooling_2d])
def test_added_layers_train_convert_to_full_int8_and_run_on_the_npu(build, tmp_path):
    model = build()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64,) + model.input_shape[1:]).astype(np.float32)
    y = rng.integers(0, 4, 64)
    check_quantizable(model, "qat")
    qat_model = quantize_aware_train(model, dataset_from_arrays(x, y, 16), "qat", ONE_EPOCH)
    tflite = convert(qat_model, "int8")  # raises ConversionError if any op stayed in float
    assert _vela_cpu_ops(tflite, tmp_path) == 0

    # The int8 model computes what the QAT model computes (within a few quantization steps).
    path = str(tmp_path / "qat")
    save_model(qat_model, path)
    loaded = load_model(path)
    np.testing.assert_allclose(loaded(x[:8], training=False), qat_model(x[:8], training=False),
                               atol=1e-5)
    assert np.array_equal(np.argmax(qat_model(x, training=False), -1),
                          np.argmax(loaded(x, training=False), -1))
    assert convert(loaded, "int8")  # a reloaded QAT model converts as well
