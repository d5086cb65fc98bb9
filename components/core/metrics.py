"""What a model's weights look like (sparsity, unique values) and how well a `.tflite` classifies.

The same `WeightStructure` is measured on a Keras model — also inside TFMOT's pruning, clustering
and quantization wrappers — and on the int8 weight tensors of the converted `.tflite`, so a step
can check that the structure an earlier step created survived conversion.
"""
from __future__ import annotations

import dataclasses
import gzip
import re
from typing import Iterable

import numpy as np

from collabopt.components.core.errors import ConfigError, DatasetError
from collabopt.components.core.keras_compat import keras, tf

# TFLite ops whose weight (input 1) is a kernel, and the axis of its output channels.
_TFLITE_KERNEL_OPS = {"CONV_2D": 0, "FULLY_CONNECTED": 0, "DEPTHWISE_CONV_2D": 3}
# Name prefixes of TFMOT wrappers, dropped so Keras and TFLite kernels are named alike.
_WRAPPER_PREFIXES = ("prune_low_magnitude_", "cluster_", "quant_")
_SIGNATURE_PREFIX = re.compile(r"^(StatefulPartitionedCall|PartitionedCall|serving_default)")


@dataclasses.dataclass(frozen=True)
class KernelStats:
    """One kernel: `size` weights, the fraction that is exactly zero, and its distinct values."""

    layer: str
    size: int
    sparsity: float
    unique_values: int
    max_unique_per_channel: int


@dataclasses.dataclass(frozen=True)
class WeightStructure:
    kernels: tuple[KernelStats, ...]

    @property
    def sparsity(self) -> float:
        """Zeros over weights, counted over all kernels together."""
        total = sum(k.size for k in self.kernels)
        if not total:
            return 0.0
        return sum(k.sparsity * k.size for k in self.kernels) / total

    @property
    def min_kernel_sparsity(self) -> float:
        return min((k.sparsity for k in self.kernels), default=0.0)

    @property
    def max_unique_per_kernel(self) -> int:
        return max((k.unique_values for k in self.kernels), default=0)

    @property
    def max_unique_per_channel(self) -> int:
        return max((k.max_unique_per_channel for k in self.kernels), default=0)

    def by_layer(self) -> dict[str, KernelStats]:
        return {k.layer: k for k in self.kernels}


def kernel_stats(name: str, kernel: np.ndarray, channel_axis: int = -1,
                 zero_point: np.ndarray | int | None = None) -> KernelStats:
    """Statistics of one kernel array; `zero_point` (per channel or scalar) marks int zeros."""
    kernel = np.asarray(kernel)
    channels = np.moveaxis(kernel, channel_axis, 0).reshape(kernel.shape[channel_axis], -1)
    if zero_point is None:
        zeros = int(np.count_nonzero(kernel == 0))
    else:
        zp = np.asarray(zero_point).reshape(-1)
        zp = np.broadcast_to(zp if zp.size == len(channels) else zp[:1], (len(channels),))
        zeros = int(np.count_nonzero(channels == zp[:, None].astype(channels.dtype)))
    return KernelStats(
        layer=name,
        size=int(kernel.size),
        sparsity=zeros / kernel.size if kernel.size else 0.0,
        unique_values=int(np.unique(kernel).size),
        max_unique_per_channel=max((int(np.unique(c).size) for c in channels), default=0),
    )


# --- Keras -----------------------------------------------------------------------------------

def keras_kernels(model: keras.Model) -> list[tuple[str, np.ndarray, int]]:
    """(layer name, kernel array, output-channel axis) of every Conv / DepthwiseConv / Dense layer,
    also inside TFMOT wrappers (see keras_weight_structure for what is read from each wrapper)."""
    found = []
    for layer in _walk_layers(model):
        kernel = _keras_kernel(layer)
        if kernel is not None:
            found.append(kernel)
    return found


def keras_weight_structure(model: keras.Model) -> WeightStructure:
    """Kernels of every Conv / DepthwiseConv / Dense layer, also inside TFMOT wrappers.

    PruneLowMagnitude and QuantizeWrapper(V2): the wrapped layer's float kernel (the pruning mask is
    applied to it in training; QAT keeps float weights). ClusterWeights: the clustered kernel, i.e.
    the cluster centroids gathered by the wrapper's pulling indices. Nested models are searched.
    """
    return WeightStructure(tuple(kernel_stats(name, kernel, axis)
                                 for name, kernel, axis in keras_kernels(model)))


def _walk_layers(model) -> Iterable[keras.layers.Layer]:
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.Model):
            yield from _walk_layers(layer)
        else:
            yield layer


def _layer_classes(*names: str) -> tuple[type, ...]:
    return tuple(getattr(keras.layers, name) for name in names if hasattr(keras.layers, name))


_DEPTHWISE_LAYERS = _layer_classes("DepthwiseConv1D", "DepthwiseConv2D")
_TRANSPOSE_LAYERS = _layer_classes("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
_KERNEL_LAYERS = _layer_classes("Dense", "Conv1D", "Conv2D", "Conv3D") + _DEPTHWISE_LAYERS + \
    _TRANSPOSE_LAYERS


def _is_kernel_layer(layer) -> bool:
    return isinstance(layer, _KERNEL_LAYERS) and \
        getattr(layer, "built", False) and \
        (getattr(layer, "kernel", None) is not None or
         getattr(layer, "depthwise_kernel", None) is not None)


def _keras_kernel(layer):
    """(name, kernel array, output-channel axis) of a kernel layer, unwrapping TFMOT wrappers."""
    cluster_wrapper = None
    chain = [layer]
    while isinstance(chain[-1], keras.layers.Wrapper) and hasattr(chain[-1], "layer"):
        if hasattr(chain[-1], "cluster_centroids") and hasattr(chain[-1], "pulling_indices"):
            cluster_wrapper = chain[-1]
        chain.append(chain[-1].layer)
    inner = chain[-1]
    if not _is_kernel_layer(inner):
        return None
    depthwise = isinstance(inner, _DEPTHWISE_LAYERS)
    attr = "depthwise_kernel" if depthwise else "kernel"
    kernel = None
    if cluster_wrapper is not None:
        kernel = _clustered_kernel(cluster_wrapper, attr)
    if kernel is None:
        kernel = _kernel_variable(chain[::-1], attr)
    if depthwise:
        # (h, w, in, multiplier): the output channels are in * multiplier, as in TFLite.
        kernel = kernel.reshape(kernel.shape[:-2] + (-1,))
        axis = -1
    elif isinstance(inner, _TRANSPOSE_LAYERS):
        axis = -2  # Conv*Transpose kernels are (..., out, in)
    else:
        axis = -1
    return _strip_wrapper_prefix(inner.name), kernel, axis


def _kernel_variable(layers: list, attr: str) -> np.ndarray:
    """The float kernel variable of layers[0], a layer inside the wrappers layers[1:].

    A TFMOT wrapper replaces the layer's `kernel` attribute by the tensor it computes (quantized,
    clustered) when called, and the variable then shows in the wrapper's `weights` only.
    """
    for layer in layers:
        for weight in layer.weights:
            if weight.name.split(":")[0].split("/")[-1] == attr:
                return np.asarray(keras.backend.get_value(weight))
    return np.asarray(keras.backend.get_value(getattr(layers[0], attr)))


def _clustered_kernel(wrapper, attr: str) -> np.ndarray | None:
    """The kernel a ClusterWeights wrapper computes: centroids[pulling_indices] (or per channel)."""
    if attr not in wrapper.cluster_centroids or attr not in wrapper.pulling_indices:
        return None
    centroids = np.asarray(keras.backend.get_value(wrapper.cluster_centroids[attr]))
    indices = np.asarray(keras.backend.get_value(wrapper.pulling_indices[attr])).astype(np.int64)
    if centroids.ndim == 1:
        return centroids[indices]
    # Per-channel clustering: centroids (channels, clusters); channels on the data_format's axis.
    axis = 1 if getattr(wrapper, "data_format", None) == "channels_first" else -1
    moved = np.moveaxis(indices, axis, -1)
    clustered = centroids[np.arange(centroids.shape[0]), moved]
    return np.moveaxis(clustered, -1, axis)


def _strip_wrapper_prefix(name: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix):]
    return name


# --- TFLite ----------------------------------------------------------------------------------

def _interpreter(tflite_bytes: bytes, delegates: bool = True) -> tf.lite.Interpreter:
    if not isinstance(tflite_bytes, (bytes, bytearray)) or len(tflite_bytes) < 8 \
            or bytes(tflite_bytes[4:8]) != b"TFL3":
        raise ConfigError("Not a TFLite flatbuffer (no 'TFL3' identifier): pass the bytes of a "
                          ".tflite file, e.g. the output of collabopt.components.core.tflite.convert().")
    resolver = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    kwargs = {} if delegates else {"experimental_op_resolver_type": resolver}
    interpreter = tf.lite.Interpreter(model_content=bytes(tflite_bytes), **kwargs)
    interpreter.allocate_tensors()
    return interpreter


def tflite_ops(tflite_bytes: bytes) -> list[dict]:
    """The model's operators in execution order: dicts with op_name, inputs, outputs (indices)."""
    interpreter = _interpreter(tflite_bytes, delegates=False)
    return [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]


@dataclasses.dataclass(frozen=True)
class TFLiteKernel:
    """One weight tensor as stored in a `.tflite`, with its quantization."""

    name: str
    values: np.ndarray            # as stored: int8 for int8 / 16x8 / dynamic-range models
    channel_axis: int
    scales: np.ndarray            # empty when not quantized
    zero_points: np.ndarray

    def dequantized(self) -> np.ndarray:
        if not self.scales.size or not np.issubdtype(self.values.dtype, np.integer):
            return self.values.astype(np.float64)
        shape = [1] * self.values.ndim
        if self.scales.size > 1:
            shape[self.channel_axis] = -1
        zero_points = (self.zero_points.reshape(shape)
                       if self.zero_points.size == self.scales.size else 0)
        return (self.values.astype(np.float64) - zero_points) * self.scales.reshape(shape)


def tflite_kernels(tflite_bytes: bytes) -> list[TFLiteKernel]:
    """Weight tensors of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED ops in the `.tflite`.

    A float16 weight behind a DEQUANTIZE op is read as float16. Each kernel is named after the
    Keras layer that produced the op when the tensor names tell it, else `<OP>:<output tensor>`.
    """
    interpreter = _interpreter(tflite_bytes, delegates=False)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    produced_by = {int(t): op for op in ops for t in op["outputs"]}
    kernels, seen, names = [], set(), set()
    for op in ops:
        axis = _TFLITE_KERNEL_OPS.get(op["op_name"])
        if axis is None or len(op["inputs"]) < 2:
            continue
        weight = int(op["inputs"][1])
        producer = produced_by.get(weight)
        if producer is not None and producer["op_name"] == "DEQUANTIZE":
            weight = int(producer["inputs"][0])  # float16 (or sparse) constant behind DEQUANTIZE
        if weight < 0 or weight in seen or weight in produced_by:
            continue  # optional, shared or computed (not constant) weight
        seen.add(weight)
        values = interpreter.get_tensor(weight)
        quant = details[weight]["quantization_parameters"]
        name = _kernel_name(op, details)
        if name in names:
            name = f"{name}#{op['index']}"
        names.add(name)
        kernels.append(TFLiteKernel(name, values, axis if values.ndim > axis else -1,
                                    np.asarray(quant["scales"]), np.asarray(quant["zero_points"])))
    return kernels


def tflite_weight_structure(tflite_bytes: bytes) -> WeightStructure:
    """The structure of tflite_kernels, measured as stored: with symmetric per-channel int8
    quantization the zero point is 0, so a zero stays an exact zero."""
    return WeightStructure(tuple(
        kernel_stats(k.name, k.values, k.channel_axis,
                     k.zero_points if k.scales.size else None)
        for k in tflite_kernels(tflite_bytes)))


def _kernel_name(op: dict, details: dict) -> str:
    output = details[int(op["outputs"][0])]["name"]
    # Converter names look like 'digits_cnn/conv1/Relu;digits_cnn/conv1/BiasAdd;...'.
    for part in output.split(";"):
        pieces = [p for p in part.split("/") if p]
        if len(pieces) >= 3 and not _SIGNATURE_PREFIX.match(pieces[0]):
            return _strip_wrapper_prefix(pieces[1])
    return f"{op['op_name']}:{output}"


def gzip_size(data: bytes) -> int:
    """Bytes after gzip at the highest level: how well the weights' structure compresses."""
    return len(gzip.compress(bytes(data), compresslevel=9, mtime=0))


def tflite_accuracy(tflite_bytes: bytes, ds: tf.data.Dataset) -> float:
    """Top-1 accuracy of a classifier `.tflite` on a batched (features, labels) dataset.

    Float features are quantized with the input tensor's scale / zero_point when the model input is
    integer (int8 / uint8 / int16). Predictions are the argmax of the output (dequantization keeps
    the order: the scale is positive); a single-unit output is read as a probability (> 0.5).
    Each batch runs as one invocation when the model accepts a resized batch, else per sample.
    """
    interpreter = _interpreter(tflite_bytes)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1:
        raise ConfigError(
            f"tflite_accuracy() handles models with one input; this one has {len(inputs)}.")
    inp, out = inputs[0], outputs[0]
    batched = bool(len(inp["shape_signature"])) and inp["shape_signature"][0] in (-1, None)
    correct = total = 0
    current_batch = int(inp["shape"][0]) if len(inp["shape"]) else 1
    for x, y in ds:
        x = _quantize_input(np.asarray(x), inp)
        labels = _labels(np.asarray(y))
        if len(labels) != len(x):
            raise DatasetError(f"A batch has {len(x)} features but {len(labels)} labels.")
        preds = None
        if batched or len(x) == current_batch:
            try:
                if len(x) != current_batch:
                    interpreter.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
                    interpreter.allocate_tensors()
                    current_batch = len(x)
                interpreter.set_tensor(inp["index"], x)
                interpreter.invoke()
                preds = _predictions(interpreter.get_tensor(out["index"]), out)
                if len(preds) != len(x):
                    preds = None
            except (ValueError, RuntimeError):
                preds = None
        if preds is None:  # a fixed batch-1 model: one sample at a time
            if current_batch != 1:
                interpreter.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
                interpreter.allocate_tensors()
                current_batch = 1
            batched = False
            preds = np.empty(len(x), dtype=np.int64)
            for i in range(len(x)):
                interpreter.set_tensor(inp["index"], x[i:i + 1])
                interpreter.invoke()
                preds[i] = _predictions(interpreter.get_tensor(out["index"]), out)[0]
        correct += int(np.count_nonzero(preds == labels))
        total += len(labels)
    if not total:
        raise DatasetError("The evaluation dataset is empty: no examples to compute accuracy on.")
    return correct / total


def _quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(x.dtype, np.integer):
        scale, zero_point = detail["quantization"]
        if not scale:
            raise ConfigError(f"Input tensor {detail['name']!r} is {dtype.name} without a scale: "
                              "cannot quantize float features for it.")
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale + zero_point), info.min, info.max)
    return x.astype(dtype)


def _predictions(output: np.ndarray, detail: dict) -> np.ndarray:
    output = output.reshape(len(output), -1)
    if output.shape[1] > 1:
        return np.argmax(output, axis=1)
    values = output[:, 0].astype(np.float64)
    scale, zero_point = detail["quantization"]
    if scale:
        values = (values - zero_point) * scale
    return (values > 0.5).astype(np.int64)


def _labels(y: np.ndarray) -> np.ndarray:
    if y.ndim > 1 and y.shape[-1] > 1:
        return np.argmax(y.reshape(len(y), -1), axis=1)  # one-hot
    return y.reshape(len(y)).astype(np.int64)


__all__ = ["KernelStats", "WeightStructure", "kernel_stats", "keras_weight_structure",
           "tflite_weight_structure", "tflite_ops", "gzip_size", "tflite_accuracy"]
