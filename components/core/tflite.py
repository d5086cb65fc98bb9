"""Keras model -> `.tflite` bytes: post-training quantization and conversion of QAT models.

Full-integer int8 is what an Ethos-U NPU runs; the other modes (dynamic range, float16, 16x8,
float32) are there to compare against. A model trained with quantization-aware training (TFMOT
`quantize_apply`) carries its own quantization ranges; a plain model needs real calibration data.
"""
from __future__ import annotations

import enum
import logging
from typing import Callable, Iterator

import numpy as np

from collabopt.components.core.data import representative_dataset
from collabopt.components.core.errors import ConfigError, ConversionError
from collabopt.components.core.keras_compat import keras, tf

# Layers that `tfmot.quantization.keras.quantize_apply` inserts: their presence marks a QAT model.
_QAT_LAYER_CLASSES = frozenset({"QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2"})


class QuantizationMode(str, enum.Enum):
    INT8 = "int8"                    # full-integer int8 weights and activations: for Ethos-U
    DYNAMIC_RANGE = "dynamic_range"  # int8 weights, float activations
    FLOAT16 = "float16"              # float16 weights
    INT16X8 = "int16x8"              # int16 activations, int8 weights
    FLOAT32 = "float32"              # no quantization


RepresentativeData = Callable[[], Iterator[list[np.ndarray]]]


def is_qat_model(model: keras.Model) -> bool:
    """True if the model went through TFMOT `quantize_apply` (QuantizeLayer / QuantizeWrapper)."""
    return any(type(layer).__name__ in _QAT_LAYER_CLASSES for layer in _all_layers(model))


def convert(model: keras.Model, mode: QuantizationMode | str = QuantizationMode.INT8,
            representative_data: RepresentativeData | tf.data.Dataset | None = None,
            int8_io: bool = True) -> bytes:
    """Converts a Keras model (plain or QAT) to TFLite flatbuffer bytes.

    Args:
      model: a Keras model, plain or returned by TFMOT `quantize_apply` (QAT / PQAT / CQAT / PCQAT).
      mode: the `QuantizationMode` (or its value).
      representative_data: calibration samples, e.g. `data.representative_dataset(train_ds)`; a
        batched `(x, y)` tf.data.Dataset is accepted too. Required by INT8 and INT16X8 for a plain
        model; ignored for a QAT model, which carries its own trained ranges.
      int8_io: INT8: int8 model input and output (the Ethos-U way) instead of float. INT16X8: int16
        input and output. Ignored by the float and dynamic-range modes, whose I/O is float.

    INT8 results are checked to be full-integer: TFLite's converter may keep an op without an int8
    kernel in float between QUANTIZE / DEQUANTIZE ops, which an NPU cannot run.

    Raises:
      ConfigError: unknown mode; INT8 / INT16X8 of a plain model without representative data; a
        QAT model in a mode other than INT8 / FLOAT32.
      ConversionError: the TFLite converter failed, or an INT8 model still has float ops.
    """
    mode = _mode(mode)
    if not isinstance(model, keras.Model):
        raise ConfigError(f"convert() needs a Keras model, got {type(model).__name__}.")
    qat = is_qat_model(model)
    if isinstance(representative_data, tf.data.Dataset):
        representative_data = representative_dataset(representative_data)
    if representative_data is not None and not callable(representative_data):
        raise ConfigError(
            "representative_data must be a callable yielding lists of input arrays, such as "
            "collabopt.components.core.data.representative_dataset(train_ds), or a batched tf.data.Dataset; "
            f"got {type(representative_data).__name__}.")
    if qat and mode not in (QuantizationMode.INT8, QuantizationMode.FLOAT32):
        raise ConfigError(
            f"Model {model.name!r} is quantization-aware trained: it converts to mode 'int8' (its "
            f"trained int8 ranges) or 'float32'. In mode {mode.value!r} TFLite would silently give "
            "int8 (float16, dynamic_range) or fail (int16x8). Use mode 'int8', or convert the "
            "model from before quantization-aware training.")
    needs_calibration = (mode is QuantizationMode.INT16X8
                         or (mode is QuantizationMode.INT8 and not qat))
    if needs_calibration and representative_data is None:
        which = "this" if mode is QuantizationMode.INT16X8 else "a plain (non-QAT)"
        raise ConfigError(
            f"Quantization mode {mode.value!r} needs representative_data to calibrate the "
            f"activation ranges of {which} model. "
            "Pass representative_data=collabopt.components.core.data.representative_dataset(train_ds) "
            "(real training samples), or quantization-aware train the model first.")

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode is QuantizationMode.INT8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if not qat:
            converter.representative_dataset = representative_data
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # A QAT model is quantized from its own FakeQuant ranges. TF 2.16 checks for them only
        # after asking for representative data when supported_ops is TFLITE_BUILTINS_INT8, so
        # that is not set here; _check_full_integer verifies the result instead.
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    elif mode is QuantizationMode.INT16X8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_data
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int16
            converter.inference_output_type = tf.int16
    elif mode is QuantizationMode.DYNAMIC_RANGE:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode is QuantizationMode.FLOAT16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    # FLOAT32: the converter's defaults.

    try:
        tflite_bytes = converter.convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError...
        detail = " ".join(str(exc).split()).rstrip(".")
        if len(detail) > 1500:
            detail = detail[:1500] + " ..."
        raise ConversionError(
            f"TFLite conversion of model {model.name!r} to {mode.value} failed: {detail}. "
            + _conversion_hint(mode, qat)) from exc
    if mode is QuantizationMode.INT8:
        _check_full_integer(tflite_bytes, model.name, qat)
    logging.info("Converted %s to %s TFLite (%d bytes, qat=%s)", model.name, mode.value,
                 len(tflite_bytes), qat)
    return tflite_bytes


def float_ops(tflite_bytes: bytes) -> list[str]:
    """Ops that compute in float: any input or output float, other than the I/O QUANTIZE /
    DEQUANTIZE of a model with float I/O. Empty for a fully integer model."""
    resolver = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = tf.lite.Interpreter(model_content=tflite_bytes,
                                      experimental_op_resolver_type=resolver)
    dtypes = {d["index"]: np.dtype(d["dtype"]) for d in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE", "DELEGATE"):
            continue
        tensors = [int(t) for t in list(op["inputs"]) + list(op["outputs"]) if int(t) >= 0]
        floats = [t for t in tensors if dtypes.get(t) is not None and dtypes[t].kind == "f"]
        if floats:
            found.append(op["op_name"])
    return found


def _check_full_integer(tflite_bytes: bytes, name: str, qat: bool) -> None:
    remaining = float_ops(tflite_bytes)
    if remaining:
        raise ConversionError(
            f"The int8 TFLite model of {name!r} still computes in float in ops "
            f"{sorted(set(remaining))}"
            + (": layers that quantize_apply left unquantized. Annotate them for quantization "
               "(or use supported layers) and quantization-aware train again."
               if qat else ". Replace those ops with ones that have int8 TFLite kernels."))


def _conversion_hint(mode: QuantizationMode, qat: bool) -> str:
    if mode in (QuantizationMode.INT8, QuantizationMode.INT16X8):
        return ("Every op must have an integer TFLite kernel: replace the ops the message names "
                "(or convert with mode 'dynamic_range' / 'float32' to inspect the model).")
    if qat:
        return "A QAT model is meant for mode 'int8'."
    return "Check that the model is a standard Keras model with TFLite-supported ops."


def _mode(mode: QuantizationMode | str) -> QuantizationMode:
    try:
        return QuantizationMode(mode)
    except ValueError:
        allowed = ", ".join(m.value for m in QuantizationMode)
        raise ConfigError(f"Unknown quantization mode {mode!r}; use one of: {allowed}.") from None


def _all_layers(model: keras.layers.Layer):
    for layer in getattr(model, "layers", ()):
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def io_details(tflite_bytes: bytes) -> dict[str, list[str]]:
    """The dtype names of the model's inputs and outputs, e.g. {'inputs': ['int8'], ...}."""
    interpreter = tf.lite.Interpreter(model_content=tflite_bytes)
    return {
        "inputs": [np.dtype(d["dtype"]).name for d in interpreter.get_input_details()],
        "outputs": [np.dtype(d["dtype"]).name for d in interpreter.get_output_details()],
    }


__all__ = ["QuantizationMode", "convert", "is_qat_model", "io_details", "float_ops"]
