"""TFLite conversion: PTQ modes of the digits CNN and int8 conversion of a QAT model."""
from __future__ import annotations

import numpy as np
import pytest

from collabopt.components.core import metrics
from collabopt.components.core.data import representative_dataset
from collabopt.components.core.errors import ConfigError, ConversionError
from collabopt.components.core.keras_compat import keras, tf, tfmot
from collabopt.components.core.tflite import QuantizationMode, convert, float_ops, io_details, is_qat_model


def _keras_accuracy(model, ds) -> float:
    correct = total = 0
    for x, y in ds:
        correct += int(np.sum(np.argmax(model(x, training=False), axis=1) == y.numpy()))
        total += len(y)
    return correct / total


def _activation_dtypes(tflite_bytes, op_name):
    interpreter = tf.lite.Interpreter(model_content=tflite_bytes)
    dtypes = {d["index"]: np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}
    return {dtypes[int(t)] for op in metrics.tflite_ops(tflite_bytes) if op["op_name"] == op_name
            for t in op["outputs"]}


@pytest.fixture(scope="module")
def calibration(digits_train_ds):
    return representative_dataset(digits_train_ds, num_samples=100)


@pytest.fixture(scope="module")
def keras_accuracy(trained_digits_model, digits_eval_ds):
    return _keras_accuracy(trained_digits_model, digits_eval_ds)


@pytest.fixture(scope="module")
def int8_digits(trained_digits_model, calibration):
    return convert(trained_digits_model, QuantizationMode.INT8, calibration)


@pytest.fixture(scope="module")
def qat_model(trained_digits_model, digits_train_ds):
    base = keras.models.clone_model(trained_digits_model)
    base.set_weights(trained_digits_model.get_weights())
    model = tfmot.quantization.keras.quantize_model(base)
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(digits_train_ds, epochs=1, verbose=0)
    return model


def test_int8_model_has_int8_io_and_only_integer_ops(int8_digits):
    assert io_details(int8_digits) == {"inputs": ["int8"], "outputs": ["int8"]}
    assert float_ops(int8_digits) == []


def test_int8_accuracy_is_within_a_few_points_of_keras(int8_digits, digits_eval_ds, keras_accuracy):
    assert keras_accuracy > 0.85
    assert metrics.tflite_accuracy(int8_digits, digits_eval_ds) == pytest.approx(keras_accuracy,
                                                                                 abs=0.03)


def test_int8_with_float_io(trained_digits_model, calibration, digits_eval_ds, keras_accuracy):
    tflite_bytes = convert(trained_digits_model, "int8", calibration, int8_io=False)
    assert io_details(tflite_bytes) == {"inputs": ["float32"], "outputs": ["float32"]}
    assert float_ops(tflite_bytes) == []  # only the QUANTIZE / DEQUANTIZE at the edges
    assert metrics.tflite_accuracy(tflite_bytes, digits_eval_ds) == pytest.approx(keras_accuracy,
                                                                                  abs=0.03)


def test_plain_model_int8_without_representative_data_names_the_fix(trained_digits_model):
    with pytest.raises(ConfigError, match="representative_data"):
        convert(trained_digits_model, QuantizationMode.INT8)
    with pytest.raises(ConfigError, match="representative_data"):
        convert(trained_digits_model, QuantizationMode.INT16X8)


def test_float16_is_about_half_of_float32(trained_digits_model):
    float32 = convert(trained_digits_model, QuantizationMode.FLOAT32)
    float16 = convert(trained_digits_model, QuantizationMode.FLOAT16)
    assert 0.4 < len(float16) / len(float32) < 0.6
    assert io_details(float16)["inputs"] == ["float32"]


def test_dynamic_range_has_int8_weights_and_float_activations(trained_digits_model, int8_digits):
    tflite_bytes = convert(trained_digits_model, QuantizationMode.DYNAMIC_RANGE)
    assert io_details(tflite_bytes)["inputs"] == ["float32"]
    assert "float32" in _activation_dtypes(tflite_bytes, "CONV_2D")
    assert abs(len(tflite_bytes) - len(int8_digits)) < 0.1 * len(int8_digits)  # int8 weights


def test_int16x8_has_int16_activations(trained_digits_model, calibration, digits_eval_ds,
                                       keras_accuracy):
    tflite_bytes = convert(trained_digits_model, QuantizationMode.INT16X8, calibration)
    assert io_details(tflite_bytes) == {"inputs": ["int16"], "outputs": ["int16"]}
    assert _activation_dtypes(tflite_bytes, "CONV_2D") == {"int16"}
    assert _activation_dtypes(tflite_bytes, "FULLY_CONNECTED") == {"int16"}
    assert metrics.tflite_accuracy(tflite_bytes, digits_eval_ds) == pytest.approx(keras_accuracy,
                                                                                  abs=0.03)


def test_qat_model_converts_to_int8_without_calibration(qat_model, digits_eval_ds):
    assert is_qat_model(qat_model)
    tflite_bytes = convert(qat_model, QuantizationMode.INT8)
    assert io_details(tflite_bytes) == {"inputs": ["int8"], "outputs": ["int8"]}
    assert float_ops(tflite_bytes) == []
    qat_accuracy = _keras_accuracy(qat_model, digits_eval_ds)
    assert metrics.tflite_accuracy(tflite_bytes, digits_eval_ds) == pytest.approx(qat_accuracy,
                                                                                  abs=0.03)


def test_qat_model_with_float_io(qat_model):
    tflite_bytes = convert(qat_model, QuantizationMode.INT8, int8_io=False)
    assert io_details(tflite_bytes) == {"inputs": ["float32"], "outputs": ["float32"]}
    assert float_ops(tflite_bytes) == []


def test_qat_model_refuses_modes_that_would_silently_be_int8(qat_model, trained_digits_model):
    assert not is_qat_model(trained_digits_model)
    with pytest.raises(ConfigError, match="int8"):
        convert(qat_model, QuantizationMode.FLOAT16)


def _erf(t):
    return tf.math.erf(t)


def _cumsum(t):
    return tf.math.cumsum(t, axis=-1)


def _dense_after(fn):
    inputs = keras.Input((8,))
    return keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Lambda(fn)(inputs)))


def _vectors():
    for _ in range(10):
        yield [np.random.default_rng(0).random((1, 8), dtype=np.float32)]


def test_conversion_failure_raises_conversion_error():
    with pytest.raises(ConversionError, match="Erf"):
        convert(_dense_after(_erf), QuantizationMode.FLOAT32)


def test_int8_model_left_with_a_float_op_raises_conversion_error():
    # TFLITE_BUILTINS_INT8 alone lets the converter keep CUMSUM in float between (de)quantize ops.
    with pytest.raises(ConversionError, match="CUMSUM"):
        convert(_dense_after(_cumsum), QuantizationMode.INT8, _vectors)


def test_unknown_mode_is_a_config_error(trained_digits_model):
    with pytest.raises(ConfigError, match="int16x8"):
        convert(trained_digits_model, "int4")
