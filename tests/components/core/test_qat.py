"""QAT / PQAT / CQAT / PCQAT: structure kept in the QAT weights, auto mode, the model format."""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

from collabopt.components.core import qat
from collabopt.components.core.errors import (ConfigError, ModelLoadError, StructureLostError,
                                    UnsupportedLayerError, UnsupportedModelError)
from collabopt.components.core.keras_compat import keras, tf, tfmot
from collabopt.components.core.metrics import keras_weight_structure
from collabopt.components.core.pruning import clone_with_weights
from collabopt.components.core.qat import (QATMode, check_quantizable, load_model, quantize_aware_train,
                                 resolve_mode, save_model)
from collabopt.components.core.training import keras_accuracy
from tests.components.core.helpers import ONE_EPOCH, KERNEL_LAYERS, _Subclassed



def _stats(model):
    return keras_weight_structure(model).by_layer()


def _max_unique(kernel) -> int:
    """Unique values that must not grow: per output channel for convolutions (TFMOT's CQAT keeps
    Conv2D clusters per channel, like the per-channel int8 scales), per tensor for Dense."""
    return kernel.max_unique_per_channel if kernel.layer.startswith("conv") \
        else kernel.unique_values


def _is_qat_model(model) -> bool:
    return any(isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2)
               for layer in model.layers)


@pytest.fixture(scope="module")
def pcqat_model(pruned_clustered, digits_train_ds):
    keras.utils.set_random_seed(7)
    return quantize_aware_train(pruned_clustered, digits_train_ds, QATMode.PCQAT, ONE_EPOCH)


def test_auto_mode_picks_from_the_measured_structure(trained_digits_model, pruned, clustered,
                                                     pruned_clustered):
    assert resolve_mode(trained_digits_model) is QATMode.QAT
    assert resolve_mode(pruned, "auto") is QATMode.PQAT
    assert resolve_mode(clustered) is QATMode.CQAT
    assert resolve_mode(pruned_clustered) is QATMode.PCQAT
    assert resolve_mode(pruned_clustered, "qat") is QATMode.QAT  # an explicit mode wins


def test_pcqat_keeps_sparsity_and_clusters_in_the_qat_weights(pcqat_model, pruned_clustered,
                                                              digits_eval_ds):
    assert _is_qat_model(pcqat_model)
    before, after = _stats(pruned_clustered), _stats(pcqat_model)
    assert set(after) == set(KERNEL_LAYERS)
    for layer in KERNEL_LAYERS:
        assert after[layer].sparsity >= before[layer].sparsity - 0.005, layer
        assert after[layer].sparsity >= 0.48, layer
        assert _max_unique(after[layer]) <= 8, layer
    assert keras_accuracy(pcqat_model, digits_eval_ds) > 0.8


def test_plain_qat_after_clustering_loses_clusters_but_cqat_keeps_them(clustered,
                                                                       digits_train_ds):
    train = digits_train_ds.take(10)
    lost = _stats(quantize_aware_train(clustered, train, "qat", ONE_EPOCH))
    kept = _stats(quantize_aware_train(clustered, train, "cqat", ONE_EPOCH))
    assert lost["dense1"].unique_values > 64
    assert lost["conv3"].max_unique_per_channel > 64
    for layer in KERNEL_LAYERS:
        assert _max_unique(kept[layer]) <= 8, layer
    assert kept["dense1"].unique_values <= 8 and kept["logits"].unique_values <= 8


def test_pqat_keeps_the_zeros_of_a_pruned_model(pruned, digits_train_ds):
    result = quantize_aware_train(pruned, digits_train_ds.take(10), "pqat", ONE_EPOCH)
    assert _is_qat_model(result)
    before, after = _stats(pruned), _stats(result)
    for layer in KERNEL_LAYERS:
        assert after[layer].sparsity >= before[layer].sparsity - 0.005, layer


def test_qat_of_the_base_model_keeps_accuracy(trained_digits_model, digits_train_ds,
                                              digits_eval_ds):
    result = quantize_aware_train(trained_digits_model, digits_train_ds.take(10), "auto",
                                  ONE_EPOCH)
    assert _is_qat_model(result)
    assert not _is_qat_model(trained_digits_model)
    base = keras_accuracy(trained_digits_model, digits_eval_ds)
    assert keras_accuracy(result, digits_eval_ds) > max(0.8, base - 0.05)


def _prune_and_cluster_by_hand(kernel: np.ndarray, clusters: int = 8) -> np.ndarray:
    """Half the weights zeroed, the rest snapped to clusters - 1 values (+ zero = clusters)."""
    out = kernel.copy()
    out[np.abs(out) <= np.median(np.abs(out))] = 0
    nonzero = out != 0
    centroids = np.quantile(out[nonzero], np.linspace(0.05, 0.95, clusters - 1))
    out[nonzero] = centroids[np.abs(out[nonzero][:, None] - centroids).argmin(axis=1)]
    return out


def test_pcqat_keeps_a_selectively_pruned_and_clustered_layer(trained_digits_model,
                                                              digits_train_ds):
    """Only dense1 is pruned + clustered. TFMOT shares one quantizer among Dense layers and it
    turns itself into CQAT at the first layer without zeros (logits); collabopt gives every
    layer its own, so dense1 keeps its zeros."""
    model = clone_with_weights(trained_digits_model)
    kernel, bias = model.get_layer("dense1").get_weights()
    model.get_layer("dense1").set_weights([_prune_and_cluster_by_hand(kernel), bias])
    assert resolve_mode(model) is QATMode.PCQAT
    result = _stats(quantize_aware_train(model, digits_train_ds.take(10), "auto", ONE_EPOCH))
    assert result["dense1"].sparsity >= 0.49
    assert result["dense1"].unique_values <= 8
    assert result["logits"].sparsity < 0.01 and result["logits"].unique_values > 64


def test_a_scheme_that_destroys_the_structure_fails_loudly(pruned_clustered, digits_train_ds):
    plain = tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme
    with mock.patch.object(qat, "_scheme", side_effect=lambda mode: plain()):
        with pytest.raises(StructureLostError, match="PCQAT did not preserve"):
            quantize_aware_train(pruned_clustered, digits_train_ds.take(5), "pcqat", ONE_EPOCH)


def test_pcqat_model_survives_save_and_load(pcqat_model, tmp_path, digits_eval_ds):
    path = str(tmp_path / "pcqat")
    save_model(pcqat_model, path)
    loaded = load_model(path)
    assert _is_qat_model(loaded)
    before, after = _stats(pcqat_model), _stats(loaded)
    for layer in KERNEL_LAYERS:
        assert after[layer].sparsity == pytest.approx(before[layer].sparsity)
        assert after[layer].unique_values == before[layer].unique_values
    x, _ = next(iter(digits_eval_ds))
    np.testing.assert_allclose(loaded(x, training=False), pcqat_model(x, training=False),
                               atol=1e-5)


def test_plain_model_survives_save_and_load(trained_digits_model, tmp_path, digits_eval_ds):
    path = str(tmp_path / "plain")
    save_model(trained_digits_model, path)
    loaded = load_model(path)
    x, _ = next(iter(digits_eval_ds))
    np.testing.assert_allclose(loaded(x, training=False),
                               trained_digits_model(x, training=False), atol=1e-6)


def test_load_of_a_missing_path_names_it_and_the_fix(tmp_path):
    missing = str(tmp_path / "nothing-here")
    with pytest.raises(ModelLoadError, match=r"(?s)nothing-here.*save_model"):
        load_model(missing)


def test_load_of_a_directory_that_is_not_a_saved_model(tmp_path):
    (tmp_path / "variables").mkdir()
    with pytest.raises(ModelLoadError, match="saved_model.pb"):
        load_model(str(tmp_path))


def test_load_of_a_corrupt_saved_model_names_the_path(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"\x00not a protobuf\xff" * 8)
    with pytest.raises(ModelLoadError, match=r"(?s)broken.*corrupt"):
        load_model(str(broken))


def test_subclassed_model_is_refused_before_training():
    model = _Subclassed()
    model(tf.zeros((1, 8, 8, 1)))
    with pytest.raises(UnsupportedModelError, match="Subclassed"):
        check_quantizable(model)


def test_lstm_and_lone_rescaling_are_named_as_unsupported_by_qat_but_conv1d_is_not():
    inputs = keras.Input(shape=(16, 4))
    x = keras.layers.Rescaling(0.5, name="rescaling")(inputs)
    x = keras.layers.Conv1D(8, 3, name="conv1d")(x)
    x = keras.layers.LSTM(8, name="lstm")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="dense")(x))
    with pytest.raises(UnsupportedLayerError,
                       match=r"(?s)rescaling.*lstm.*post-training") as info:
        check_quantizable(model)
    assert info.value.layers == ["rescaling", "lstm"]


def test_conv_batchnorm_and_separable_conv_are_quantizable_but_lone_batchnorm_is_not():
    inputs = keras.Input(shape=(8, 8, 1))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)  # folded into the conv by TFMOT
    x = keras.layers.ReLU()(x)
    x = keras.layers.SeparableConv2D(8, 3, name="separable")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    for mode in ("qat", "pcqat"):
        check_quantizable(model, mode)

    lone = keras.layers.BatchNormalization(name="lone_bn")(inputs)
    lone = keras.layers.Flatten()(keras.layers.Conv2D(8, 3)(lone))
    with pytest.raises(UnsupportedLayerError, match="lone_bn") as info:
        check_quantizable(keras.Model(inputs, keras.layers.Dense(10)(lone)))
    assert info.value.layers == ["lone_bn"]


def test_python_lambda_layers_are_named_as_unsupported_by_qat():
    inputs = keras.Input(shape=(8, 8, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(x))
    with pytest.raises(UnsupportedLayerError, match="double") as info:
        check_quantizable(keras.Model(inputs, keras.layers.Dense(10)(x)))
    assert info.value.layers == ["double"]


def test_already_quantization_aware_model_is_refused(pcqat_model):
    with pytest.raises(UnsupportedModelError, match="already quantization-aware"):
        check_quantizable(pcqat_model)


def test_unknown_mode_is_a_config_error(trained_digits_model):
    with pytest.raises(ConfigError, match="mode"):
        resolve_mode(trained_digits_model, "int4")


def test_cqat_check_counts_shared_centroids_per_tensor_and_own_centroids_per_channel():
    from collabopt.components.core.qat import _Kernel, _verify

    rng = np.random.default_rng(0)
    centroids = np.linspace(-1.0, 1.0, 16)
    # Channels using 4 to 16 of one shared set of centroids: TFMOT's CQAT shares them, so
    # fine-tuning may move a weight of channel 0 to a centroid only channel 15 used before.
    shared = np.stack([rng.choice(centroids[:4 + c * 12 // 15], size=64) for c in range(16)],
                      axis=-1).reshape(4, 4, 4, 16)
    moved = shared.copy()
    moved[0, 0, 0, 0] = centroids[-1]
    _verify([_Kernel("conv", shared)], [_Kernel("conv", moved)], QATMode.CQAT)
    new_value = moved.copy()
    new_value[0, 0, 0, 0] = 5.0
    with pytest.raises(StructureLostError, match="'conv' unique values rose from 16 to 17"):
        _verify([_Kernel("conv", shared)], [_Kernel("conv", new_value)], QATMode.CQAT)
    # Every channel with (nearly) all 8 of its own centroids: CQAT keeps them per channel.
    own = np.stack([rng.permutation(np.resize(rng.normal(size=8), 64)) for _ in range(16)],
                   axis=-1).reshape(4, 4, 4, 16)
    spread = own.copy()
    spread[0, 0, 0, 0] = own[0, 0, 0, 1]
    with pytest.raises(StructureLostError, match="per channel rose from 8 to 9"):
        _verify([_Kernel("conv", own)], [_Kernel("conv", spread)], QATMode.CQAT)
