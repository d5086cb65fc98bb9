"""TFLM's tensor arena: measured on the int8 digits CNN and checked against the interpreter."""
from __future__ import annotations

import pytest

from collabopt.components.core import tflm
from collabopt.components.core.errors import TFLMError
from collabopt.components.core.keras_compat import keras, tf
from collabopt.components.core.tflite import convert


@pytest.fixture(scope="module")
def int8_digits(trained_digits_model, digits_train_ds):
    return convert(trained_digits_model, "int8", representative_data=digits_train_ds.take(4))


def _loads(tflite_bytes: bytes, arena_size: int) -> bool:
    from tflite_micro.python.tflite_micro import runtime

    with tflm._captured_stderr():
        try:
            runtime.Interpreter.from_bytes(tflite_bytes, arena_size=arena_size)
            return True
        except RuntimeError:
            return False


def test_measured_arena_is_what_the_interpreter_needs(int8_digits):
    report = tflm.measure(int8_digits)
    assert report.supported and report.unsupported_ops == ()
    assert set(report.ops) >= {"CONV_2D", "FULLY_CONNECTED"}
    # TFLM runs the model in exactly the measured arena, and not in one a few bytes short of it.
    assert _loads(int8_digits, report.arena_bytes)
    assert not _loads(int8_digits, report.arena_bytes - 64)


def test_float_activations_need_a_larger_arena(trained_digits_model, int8_digits):
    float_bytes = convert(trained_digits_model, "float32")
    assert tflm.arena_bytes(float_bytes) > 1.5 * tflm.arena_bytes(int8_digits)


def _model_with_ops_tflm_lacks() -> bytes:
    inputs = keras.Input((8,))
    x = keras.layers.Lambda(lambda t: tf.sort(t, axis=1))(inputs)              # TOPK_V2
    x = keras.layers.Lambda(lambda t: tf.math.segment_sum(t, [0] * 1))(x)      # SEGMENT_SUM
    outputs = keras.layers.Dense(3)(x)
    return tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs)).convert()


def test_every_operator_tflm_lacks_is_named():
    report = tflm.measure(_model_with_ops_tflm_lacks())
    assert report.arena_bytes is None and not report.supported
    assert report.unsupported_ops == ("TOPK_V2", "SEGMENT_SUM")
    assert "FULLY_CONNECTED" in report.ops and "FULLY_CONNECTED" not in report.unsupported_ops
    assert "TOPK_V2" in report.error
    with pytest.raises(TFLMError, match="no kernel for operator TOPK_V2"):
        tflm.arena_bytes(_model_with_ops_tflm_lacks())


def test_bytes_that_are_not_a_model_are_a_clear_error():
    with pytest.raises(TFLMError, match="Not a TFLite flatbuffer"):
        tflm.measure(b"not a model at all")
