"""Fine-tuning helpers: parameters, logits detection, batch counting, accuracy."""
from __future__ import annotations

import numpy as np
import pytest

from collabopt.components.core.errors import ConfigError, DatasetError
from collabopt.components.core.keras_compat import keras, tf
from collabopt.components.core.training import (TrainingParams, compile_for_fine_tuning, count_batches,
                                      fine_tune, keras_accuracy, outputs_probabilities)


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
])
def test_training_params_reject_out_of_range_values(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        TrainingParams(**kwargs)


def test_training_params_defaults_are_short_and_gentle():
    params = TrainingParams()
    assert params.epochs == 2 and params.learning_rate == pytest.approx(1e-4)
    assert params.from_logits is None


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
    history = fine_tune(model, digits_train_ds, TrainingParams(epochs=2, learning_rate=1e-2))
    assert len(history.history["loss"]) == 2
    assert np.isfinite(history.history["loss"]).all()
    after = keras_accuracy(model, digits_eval_ds)
    assert after > max(before, 0.8)
