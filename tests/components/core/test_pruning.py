"""Pruning: measured sparsity, 2:4 structure, selective pruning, the XNNPACK policy, errors."""
from __future__ import annotations

import numpy as np
import pytest

from collabopt.components.core.errors import ConfigError, UnsupportedLayerError, UnsupportedModelError
from collabopt.components.core.keras_compat import keras, tf
from collabopt.components.core.metrics import keras_weight_structure
from collabopt.components.core.pruning import (PruningParams, PruningPolicy, PruningSchedule,
                                     check_prunable, prune, ramp_epochs)
from collabopt.components.core.training import (StopReason, TrainingParams, fine_tuning_of,
                                                keras_accuracy)
from tests.components.core.helpers import ONE_EPOCH, KERNEL_LAYERS, _Scale, _Subclassed



def _with_custom_layer():
    inputs = keras.Input(shape=(8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = _Scale(name="scale")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="dense")(x))


def _m_by_n_groups(kernel: np.ndarray, n: int) -> np.ndarray:
    """Groups of n consecutive weights along the input-channel axis (TFLite's last axis)."""
    if kernel.ndim == 4:  # (h, w, in, out) -> (out * h * w, in)
        rows = np.transpose(kernel, (3, 0, 1, 2)).reshape(-1, kernel.shape[2])
    else:  # (in, out) -> (out, in)
        rows = kernel.T
    return rows.reshape(rows.shape[0], -1, n)


def _sparsity(model) -> dict[str, float]:
    return {k.layer: k.sparsity for k in keras_weight_structure(model).kernels}


@pytest.fixture(scope="module")
def polynomial_pruned(trained_digits_model, digits_train_ds):
    keras.utils.set_random_seed(1)
    return prune(trained_digits_model, digits_train_ds, PruningParams(target_sparsity=0.5),
                 ONE_EPOCH)


def test_polynomial_decay_prunes_every_kernel_to_target(polynomial_pruned, trained_digits_model):
    sparsity = _sparsity(polynomial_pruned)
    assert set(sparsity) == set(KERNEL_LAYERS)
    for layer, value in sparsity.items():
        assert value >= 0.48, f"{layer}: {value:.3f}"
    assert max(_sparsity(trained_digits_model).values()) < 0.01  # the input model is untouched


def test_pruned_model_is_stripped_and_keeps_layer_names(polynomial_pruned, trained_digits_model):
    assert [layer.name for layer in polynomial_pruned.layers] == \
        [layer.name for layer in trained_digits_model.layers]
    assert not any("prune" in type(layer).__name__.lower() for layer in polynomial_pruned.layers)


def test_pruned_model_keeps_accuracy(polynomial_pruned, trained_digits_model, digits_eval_ds):
    base = keras_accuracy(trained_digits_model, digits_eval_ds)
    accuracy = keras_accuracy(polynomial_pruned, digits_eval_ds)
    assert accuracy > 0.8
    assert accuracy > base - 0.1


def test_selective_constant_sparsity_prunes_only_named_layers(trained_digits_model,
                                                               digits_train_ds):
    params = PruningParams(target_sparsity=0.7, pruning_schedule="constant_sparsity",
                           layers=("conv2", "dense1"))
    assert params.pruning_schedule is PruningSchedule.CONSTANT_SPARSITY
    pruned = prune(trained_digits_model, digits_train_ds.take(12), params, ONE_EPOCH)
    sparsity = _sparsity(pruned)
    assert sparsity["conv2"] >= 0.68 and sparsity["dense1"] >= 0.68
    for layer in ("conv1", "conv3", "logits"):
        assert sparsity[layer] < 0.01, layer


def test_2_by_4_sparsity_has_two_zeros_in_every_group_of_four(trained_digits_model,
                                                               digits_train_ds, digits_eval_ds):
    pruned = prune(trained_digits_model, digits_train_ds,
                   PruningParams(sparsity_m_by_n=(2, 4)), ONE_EPOCH)
    # conv1 sees a 1-channel image: no group of 4 input channels, so it stays dense.
    assert _sparsity(pruned)["conv1"] < 0.01
    for name in ("conv2", "conv3", "dense1", "logits"):
        groups = _m_by_n_groups(pruned.get_layer(name).kernel.numpy(), 4)
        zeros_per_group = np.sum(groups == 0, axis=-1)
        assert zeros_per_group.min() >= 2, name
    assert keras_accuracy(pruned, digits_eval_ds) > 0.8


def test_m_by_n_on_a_named_layer_without_channel_groups_is_refused(trained_digits_model):
    with pytest.raises(UnsupportedLayerError, match="conv1") as info:
        check_prunable(trained_digits_model,
                       PruningParams(sparsity_m_by_n=(2, 4), layers=("conv1", "conv2")))
    assert info.value.layers == ["conv1"]


def _xnnpack_model():
    """The subgraph PruneForLatencyOnXNNPack looks for: padded 3x3/2 stem ... GAP."""
    inputs = keras.Input(shape=(8, 8, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="valid", activation="relu", name="stem")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu", name="pointwise1")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu", name="pointwise2")(x)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(x))


def test_xnnpack_policy_prunes_only_1x1_convolutions(digits_train_ds):
    keras.utils.set_random_seed(0)
    rgb = digits_train_ds.map(lambda x, y: (tf.tile(x, [1, 1, 1, 3]), y)).take(12)
    params = PruningParams(target_sparsity=0.5, pruning_policy="prune_for_latency_on_xnnpack")
    assert params.pruning_policy is PruningPolicy.PRUNE_FOR_LATENCY_ON_XNNPACK
    pruned = prune(_xnnpack_model(), rgb, params, ONE_EPOCH)
    sparsity = _sparsity(pruned)
    assert sparsity["pointwise1"] >= 0.48 and sparsity["pointwise2"] >= 0.48
    assert sparsity["stem"] < 0.01 and sparsity["head"] < 0.01


def test_xnnpack_policy_refuses_a_model_without_its_subgraph(trained_digits_model):
    with pytest.raises(UnsupportedModelError, match="PruneForLatencyOnXNNPack"):
        check_prunable(trained_digits_model,
                       PruningParams(pruning_policy="prune_for_latency_on_xnnpack"))


def test_subclassed_model_is_refused_before_training():
    model = _Subclassed()
    model(tf.zeros((1, 8, 8, 1)))
    with pytest.raises(UnsupportedModelError, match="Subclassed"):
        check_prunable(model, PruningParams())


def test_custom_layer_with_weights_is_named_with_the_way_out():
    with pytest.raises(UnsupportedLayerError, match=r"(?s)'scale' \(_Scale\).*`layers`") as info:
        check_prunable(_with_custom_layer(), PruningParams())
    assert info.value.layers == ["scale"]
    # The way out: prune only the layers TFMOT supports.
    check_prunable(_with_custom_layer(), PruningParams(layers=("conv", "dense")))


def test_weightless_layers_and_tfmot_supported_layers_pass_the_check():
    inputs = keras.Input(shape=(16, 4))
    x = keras.layers.Conv1D(8, 3, name="conv1d")(inputs)
    x = keras.layers.LSTM(8, return_sequences=True, name="lstm")(x)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.Lambda(lambda t: t * 2.0)(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="dense")(x))
    check_prunable(model, PruningParams())
    # 2:4 sparsity applies to the Dense layer only; naming the Conv1D for it is an error.
    check_prunable(model, PruningParams(sparsity_m_by_n=(2, 4)))
    with pytest.raises(UnsupportedLayerError, match="conv1d"):
        check_prunable(model, PruningParams(sparsity_m_by_n=(2, 4), layers=("conv1d", "dense")))


def test_unknown_or_weightless_layer_names_are_config_errors(trained_digits_model):
    with pytest.raises(ConfigError, match="nope"):
        check_prunable(trained_digits_model, PruningParams(layers=("conv1", "nope")))
    with pytest.raises(ConfigError, match="flatten"):
        check_prunable(trained_digits_model, PruningParams(layers=("flatten",)))


def test_schedule_ending_after_fine_tuning_is_refused_before_training(trained_digits_model,
                                                                       digits_train_ds):
    with pytest.raises(ConfigError, match="end_step"):
        prune(trained_digits_model, digits_train_ds, PruningParams(end_step=10**6), ONE_EPOCH)
    with pytest.raises(ConfigError, match="frequency"):
        prune(trained_digits_model, digits_train_ds.take(3), PruningParams(frequency=10),
              ONE_EPOCH)


@pytest.mark.parametrize("kwargs, field", [
    ({"target_sparsity": 1.0}, "target_sparsity"),
    ({"target_sparsity": -0.1}, "target_sparsity"),
    ({"initial_sparsity": 0.6, "target_sparsity": 0.5}, "initial_sparsity"),
    ({"pruning_schedule": "cubic"}, "pruning_schedule"),
    ({"begin_step": -1}, "begin_step"),
    ({"begin_step": 100, "end_step": 50}, "end_step"),
    ({"begin_step": 50, "end_step": 50}, "end_step"),
    ({"frequency": 0}, "frequency"),
    ({"sparsity_m_by_n": (4, 4)}, "sparsity_m_by_n"),
    ({"sparsity_m_by_n": (0, 4)}, "sparsity_m_by_n"),
    ({"sparsity_m_by_n": (2,)}, "sparsity_m_by_n"),
    ({"pruning_policy": "fastest"}, "pruning_policy"),
    ({"layers": ()}, "layers"),
])
def test_bad_pruning_params_raise_config_error(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        PruningParams(**kwargs)


def test_params_accept_yaml_shaped_values():
    params = PruningParams(sparsity_m_by_n=[2, 4], layers=["conv2"],
                           pruning_schedule="polynomial_decay")
    assert params.sparsity_m_by_n == (2, 4) and params.layers == ("conv2",)
    assert params.expected_sparsity == 0.5


@pytest.mark.parametrize("schedule", ["polynomial_decay", "constant_sparsity"])
def test_pruning_until_recovered_reaches_the_target_before_it_may_stop(
        schedule, trained_digits_model, digits_train_validation):
    train, validation = digits_train_validation
    training = TrainingParams(max_epochs=8, patience=1)  # the schedule ends after 2 epochs
    keras.utils.set_random_seed(3)
    pruned = prune(trained_digits_model, train,
                   PruningParams(target_sparsity=0.6, pruning_schedule=schedule), training,
                   validation_ds=validation)
    record = fine_tuning_of(pruned)
    assert ramp_epochs(training) == 2 <= record.epochs_trained <= 8
    assert record.stop_reason in (StopReason.RECOVERED, StopReason.NO_IMPROVEMENT,
                                  StopReason.MAX_EPOCHS)
    assert record.reference_accuracy == pytest.approx(
        keras_accuracy(trained_digits_model, validation))
    assert record.validation_accuracy == pytest.approx(keras_accuracy(pruned, validation))
    if record.stop_reason is StopReason.RECOVERED:
        assert record.validation_accuracy >= record.reference_accuracy - 0.005
    assert min(_sparsity(pruned).values()) >= 0.58
