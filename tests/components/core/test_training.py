"""Fine-tuning: parameters, logits detection, batch counting, accuracy, recovery stopping."""
from __future__ import annotations

import numpy as np
import pytest

from collabopt.components.core.errors import ConfigError, DatasetError
from collabopt.components.core.keras_compat import keras, tf
from collabopt.components.core.training import (StopReason, TrainingParams,
                                                compile_for_fine_tuning, count_batches, fine_tune,
                                                keras_accuracy, outputs_probabilities,
                                                reference_accuracy)


def _tiny(final_activation=None, softmax_layer=False):
    inputs = keras.Input(shape=(8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(10, activation=final_activation)(x)
    if softmax_layer:
        x = keras.layers.Softmax()(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("kwargs, field", [
    ({"epochs": 0}, "epochs"),
    ({"epochs": 1.5}, "epochs"),
    ({"epochs": True}, "epochs"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"learning_rate": -1e-3}, "learning_rate"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"from_logits": "yes"}, "from_logits"),
    ({"max_epochs": 0}, "max_epochs"),
    ({"patience": 0}, "patience"),
    ({"patience": 1.0}, "patience"),
    ({"recovery_tolerance": -0.1}, "recovery_tolerance"),
    ({"recovery_tolerance": 2}, "recovery_tolerance"),
    ({"validation_fraction": 0}, "validation_fraction"),
    ({"validation_fraction": 0.9}, "validation_fraction"),
])
def test_training_params_reject_out_of_range_values(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        TrainingParams(**kwargs)


def test_training_params_default_to_recovery_within_a_cap():
    params = TrainingParams()
    assert params.epochs is None and params.recovers
    assert params.max_epochs == 8 and params.patience == 2 and params.epoch_budget == 8
    assert params.recovery_tolerance == pytest.approx(0.005)
    assert params.validation_fraction == pytest.approx(0.1)
    assert params.learning_rate == pytest.approx(3e-4)
    assert params.from_logits is None
    fixed = TrainingParams(epochs=3)
    assert not fixed.recovers and fixed.epoch_budget == 3


def test_softmax_outputs_are_detected_as_probabilities():
    assert outputs_probabilities(_tiny("softmax"))
    assert outputs_probabilities(_tiny(softmax_layer=True))
    assert not outputs_probabilities(_tiny(None))
    assert not outputs_probabilities(_tiny("relu"))


def test_compile_picks_from_logits_from_the_model_unless_told():
    logits_model = compile_for_fine_tuning(_tiny(None), TrainingParams())
    probs_model = compile_for_fine_tuning(_tiny("softmax"), TrainingParams())
    forced = compile_for_fine_tuning(_tiny("softmax"), TrainingParams(from_logits=True))
    assert logits_model.loss.get_config()["from_logits"] is True
    assert probs_model.loss.get_config()["from_logits"] is False
    assert forced.loss.get_config()["from_logits"] is True


def test_count_batches_known_unknown_and_broken_datasets():
    ds = tf.data.Dataset.range(10).batch(3)
    assert count_batches(ds) == 4
    assert count_batches(ds.filter(lambda x: tf.reduce_all(x >= 0))) == 4  # unknown cardinality
    with pytest.raises(DatasetError, match="repeat"):
        count_batches(ds.repeat())
    with pytest.raises(DatasetError, match="empty"):
        count_batches(ds.take(0))


def test_keras_accuracy_of_reference_model_is_high(trained_digits_model, digits_eval_ds):
    accuracy = keras_accuracy(trained_digits_model, digits_eval_ds)
    assert 0.9 < accuracy <= 1.0


def test_keras_accuracy_on_empty_data_raises(trained_digits_model, digits_eval_ds):
    with pytest.raises(DatasetError, match="empty"):
        keras_accuracy(trained_digits_model, digits_eval_ds.take(0))


def test_fine_tune_trains_a_softmax_model_without_touching_the_loss_choice(digits_train_ds,
                                                                            digits_eval_ds):
    """A probabilities model fine-tunes correctly with from_logits auto (no manual setting)."""
    keras.utils.set_random_seed(0)
    model = _tiny("softmax")
    before = keras_accuracy(model, digits_eval_ds)
    record = fine_tune(model, digits_train_ds, TrainingParams(epochs=2, learning_rate=1e-2))
    assert record.epochs_trained == 2 and len(record.losses) == 2
    assert record.stop_reason is StopReason.FIXED_EPOCHS
    assert record.validation_accuracy is None
    assert np.isfinite(record.losses).all()
    after = keras_accuracy(model, digits_eval_ds)
    assert after > max(before, 0.8)


# --- fine-tuning until recovered -----------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_split(digits_arrays):
    from collabopt.components.core.data import train_and_validation_from_arrays

    (x, y), _ = digits_arrays
    return train_and_validation_from_arrays(x, y, validation_fraction=0.2, seed=0)


def _untrained(seed=0):
    keras.utils.set_random_seed(seed)
    return _tiny("softmax")


def test_a_step_that_needs_more_epochs_to_recover_gets_them(digits_split):
    train, validation = digits_split
    model = _untrained()
    start = keras_accuracy(model, validation)
    params = TrainingParams(max_epochs=20, patience=3, recovery_tolerance=0.02,
                            learning_rate=1e-2)
    record = fine_tune(model, train, params, validation_ds=validation, reference=0.92)
    assert start < 0.3
    assert record.stop_reason is StopReason.RECOVERED
    assert 2 <= record.epochs_trained < 20
    assert record.validation_accuracy >= 0.90
    assert record.validation_accuracy == pytest.approx(keras_accuracy(model, validation))
    assert record.reference_accuracy == pytest.approx(0.92)


def test_a_step_that_recovers_early_stops_early(digits_split):
    train, validation = digits_split
    model = _untrained()
    record = fine_tune(model, train, TrainingParams(max_epochs=20, learning_rate=1e-2),
                       validation_ds=validation, reference=0.5)
    assert record.stop_reason is StopReason.RECOVERED and record.epochs_trained == 1


def test_no_stop_before_min_epochs_and_the_cap_holds(digits_split):
    train, validation = digits_split
    model = _untrained()
    unreachable = TrainingParams(max_epochs=4, patience=1, learning_rate=1e-2)
    record = fine_tune(model, train, unreachable, validation_ds=validation, reference=1.5,
                       min_epochs=3)
    assert 3 <= record.epochs_trained <= 4
    assert record.stop_reason in (StopReason.MAX_EPOCHS, StopReason.NO_IMPROVEMENT)
    early = fine_tune(_untrained(), train, TrainingParams(max_epochs=6, learning_rate=1e-2),
                      validation_ds=validation, reference=0.5, min_epochs=3)
    assert early.stop_reason is StopReason.RECOVERED and early.epochs_trained == 3


def test_the_reference_floor_raises_the_reference_but_never_lowers_it(digits_split):
    train, validation = digits_split
    model = _untrained()
    own = reference_accuracy(model, TrainingParams(), validation)
    assert own < 0.3
    assert reference_accuracy(model, TrainingParams(reference_floor=0.97), validation) == \
        pytest.approx(0.97)
    assert reference_accuracy(model, TrainingParams(reference_floor=0.0), validation) == \
        pytest.approx(own)
    # A model that recovers its own accuracy at once still trains on toward the floor.
    record = fine_tune(model, train, TrainingParams(max_epochs=3, patience=3, learning_rate=1e-2,
                                                    reference_floor=0.99),
                       validation_ds=validation)
    assert record.reference_accuracy == pytest.approx(0.99)
    assert record.epochs_trained == 3 and record.stop_reason is StopReason.MAX_EPOCHS


@pytest.mark.parametrize("floor", [-0.1, 1.5, float("nan"), "high"])
def test_a_reference_floor_outside_0_1_is_refused(floor):
    with pytest.raises(ConfigError, match="reference_floor"):
        TrainingParams(reference_floor=floor)


def test_fixed_epochs_train_exactly_that_many_without_validation(digits_split):
    train, validation = digits_split
    record = fine_tune(_untrained(), train, TrainingParams(epochs=3, learning_rate=1e-2),
                       validation_ds=validation, reference=0.1)
    assert record.epochs_trained == 3 and record.stop_reason is StopReason.FIXED_EPOCHS
    assert record.reference_accuracy is None


def test_recovery_without_a_validation_slice_says_what_to_pass(digits_train_ds):
    with pytest.raises(ConfigError, match=r"(?s)validation.*fixed `epochs`"):
        fine_tune(_untrained(), digits_train_ds, TrainingParams())


def test_validation_slice_is_disjoint_deterministic_and_sized(tmp_path):
    from collabopt.components.core.data import (FeatureSpec, train_and_validation_from_arrays,
                                                train_and_validation_from_tfrecords,
                                                write_examples)

    n = 203
    x = np.arange(n, dtype=np.float32).reshape(n, 1)
    y = np.arange(n)  # labels name the examples

    def labels(ds):
        return [int(v) for _, batch in ds for v in batch.numpy()]

    spec = FeatureSpec(feature_key="x", label_key="y", feature_shape=(1,))
    write_examples(str(tmp_path / "a.tfrecord"), x[:100], y[:100], spec)
    write_examples(str(tmp_path / "b.tfrecord"), x[100:], y[100:], spec)
    for from_arrays, (train, validation) in (
            (True, train_and_validation_from_arrays(x, y, 0.1, batch_size=16)),
            (False, train_and_validation_from_tfrecords(str(tmp_path), spec, 0.1,
                                                        batch_size=16))):
        held_out = labels(validation)
        assert held_out == labels(validation)  # the same slice on every pass
        assert len(held_out) == 20  # floor(203 * 0.1)
        if from_arrays:  # every 10th in array order (TFRecords: in canonical order, see data.py)
            assert held_out == [i for i in range(n) if (i + 1) // 10 > i // 10]
        first, second = labels(train), labels(train)
        assert first != second  # the rest is reshuffled every epoch ...
        assert sorted(first) == sorted(second)  # ... but stays the same examples
        assert not set(first) & set(held_out) and len(first) + len(held_out) == n
