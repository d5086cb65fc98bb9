"""Quantization-aware training that keeps what earlier steps achieved, and the one model format.

Modes (TFMOT's collaborative-optimization schemes, applied with quantize_annotate_model +
quantize_apply(scheme)):
  qat    Default8BitQuantizeScheme — plain QAT; destroys sparsity and clusters.
  pqat   Default8BitPrunePreserveQuantizeScheme — keeps the zeros of a pruned model.
  cqat   Default8BitClusterPreserveQuantizeScheme() — keeps the clusters of a clustered model.
  pcqat  Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True) — keeps both.
  auto   measured from the incoming model (see `resolve_mode`).
cqat/pcqat keep the clusters of Conv2D kernels per output channel (see `_verify`), and use one
cluster-preserving weight quantizer per layer: TFMOT shares one among all layers of a kind and it
silently drops PCQAT to CQAT after meeting a layer without zeros (see
`_PerLayerClusterPreserveRegistry`). pqat/cqat/pcqat verify that the incoming sparsity / clusters
survived and raise StructureLostError otherwise.

Beyond TFMOT's 8-bit registry (0.8.1), every mode also quantizes Conv1D and DepthwiseConv1D
(rewritten as their 2-D twins with a (1, k) kernel between ExpandDims / Squeeze layers, so they
are quantized per output channel, fold a following BatchNormalization and keep sparsity and
clusters exactly as Conv2D does), MaxPooling1D (no output quantizer: it passes its input's
scale on), Multiply and Subtract (see _EXTRA_QUANTIZE_CONFIGS). A saved QAT model of a Conv1D
holds collabopt's ExpandDims / Squeeze layers (registered Keras serializables; `load_model`
reads them).

Support is checked by running quantize_apply on a copy (TFMOT's layout transforms fold
Conv2D+BatchNormalization and split SeparableConv2D, so its registry alone would misjudge them).

The model returned by `quantize_aware_train` is the quantization-aware Keras model (layers
wrapped in QuantizeWrapperV2; for cqat/pcqat the CQAT training variables are stripped with
strip_clustering_cqat, as TFMOT's guides do before conversion). Its float kernels inside the
wrappers hold the preserved structure; hand it to the TFLite converter as it is — do not strip
the wrappers, they carry the learned quantization ranges.

Saving: `save_model` writes a Keras SavedModel directory (tf_keras, without optimizer);
`load_model` reads any model this project saves — plain, pruned, clustered or QAT/PQAT/CQAT/
PCQAT — inside TFMOT's quantize scope. A loaded CQAT/PCQAT model comes back with TFMOT's
default 8-bit weight quantizers (TFMOT does not serialize the cluster-preserving quantizers);
its clustered weights and quantization ranges are restored unchanged, so it converts to the same
int8 model, but fine-tuning it again would no longer preserve the clusters: re-run this step
from the clustered model instead.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import enum
import logging
import os
import re

import numpy as np

from collabopt.components.core import training as training_lib
from collabopt.components.core.errors import (CollaboptError, ModelLoadError, StructureLostError,
                                    UnsupportedLayerError, UnsupportedModelError)
from collabopt.components.core.keras_compat import keras, tf, tfmot
from collabopt.components.core.preservation import (MAX_CLUSTERED_UNIQUE, MIN_PRUNED_SPARSITY,
                                          MIN_WEIGHTS_PER_VALUE)
from collabopt.components.core.pruning import clone_with_weights, ensure_functional, enum_param
# Quantizer classes and registries that are not in TFMOT's public API; keras_compat (above) has
# already set TF_USE_LEGACY_KERAS, so importing the modules directly is safe.
from tensorflow_model_optimization.python.core.quantization.keras.collab_opts import (  # noqa: E402
    cluster_preserve, prune_preserve)
from tensorflow_model_optimization.python.core.quantization.keras import (  # noqa: E402
    utils as _quantize_utils)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_configs as _default_configs,
    default_8bit_quantize_layout_transform as _default_layout,
    default_8bit_quantize_registry as _default_registry, default_8bit_transforms as _default_transforms)
from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (  # noqa: E402
    model_transformer as _model_transformer, transforms as _transforms)

_cqat_registry = cluster_preserve.cluster_preserve_quantize_registry
_pqat_registry = prune_preserve.prune_preserve_quantize_registry

# `auto` mode thresholds (see resolve_mode), shared with core.preservation's checks:
# a kernel counts as pruned when at least MIN_PRUNED_SPARSITY of it is exactly zero (trained float
# kernels have practically none; TFMOT pruning leaves the target fraction, e.g. 50 %), and as
# clustered when its non-zero weights take at most MAX_CLUSTERED_UNIQUE distinct values (per
# kernel, or in every output channel for per-channel clustering) with at least
# MIN_WEIGHTS_PER_VALUE weights per value on average, so a small kernel (e.g. a 3x3
# single-channel filter) does not look clustered just because it is small.
PRUNED_SPARSITY_THRESHOLD = MIN_PRUNED_SPARSITY
# Sparsity a PQAT/PCQAT kernel may lose before the step fails (zeros are kept exactly).
SPARSITY_TOLERANCE = 0.005

SAVED_MODEL_FILE = "saved_model.pb"


class QATMode(str, enum.Enum):
    QAT = "qat"
    PQAT = "pqat"
    CQAT = "cqat"
    PCQAT = "pcqat"
    AUTO = "auto"

    @property
    def preserves_sparsity(self) -> bool:
        return self in (QATMode.PQAT, QATMode.PCQAT)

    @property
    def preserves_clusters(self) -> bool:
        return self in (QATMode.CQAT, QATMode.PCQAT)


# ---------------------------------------------------------------------------------------------
# Measuring the incoming model

@dataclasses.dataclass(frozen=True)
class _Kernel:
    layer: str
    values: np.ndarray

    @property
    def sparsity(self) -> float:
        return float(np.mean(self.values == 0))

    def _channel_counts(self) -> list[int]:
        channels = self.values.reshape(-1, self.values.shape[-1])
        return [len(np.unique(channels[:, c])) for c in range(channels.shape[1])]

    def unique(self, per_channel: bool) -> int:
        if per_channel and self.values.ndim >= 2:
            return max(self._channel_counts())
        return len(np.unique(self.values))

    @property
    def cqat_keeps_channels(self) -> bool:
        """Whether TFMOT's CQAT gives this kernel centroids per output channel
        (cluster_preserve_quantize_registry.get_centroids): only a Conv2D kernel (or a Conv1D
        one, which this module quantizes in the Conv2D layout) whose channels' counts of unique
        values differ by at most one. Any other kernel shares one set of centroids, and
        fine-tuning may move a channel's weight to any of them."""
        if self.values.ndim not in (3, 4):
            return False
        counts = self._channel_counts()
        return max(counts) - min(counts) <= 1

    @staticmethod
    def _clustered(values: np.ndarray) -> bool:
        nonzero = values[values != 0]
        distinct = len(np.unique(nonzero))
        return 0 < distinct <= MAX_CLUSTERED_UNIQUE and \
            nonzero.size >= MIN_WEIGHTS_PER_VALUE * distinct

    @property
    def clustered_per_tensor(self) -> bool:
        return self._clustered(self.values)

    @property
    def clustered_per_channel(self) -> bool:
        if self.values.ndim < 2:
            return False
        channels = self.values.reshape(-1, self.values.shape[-1])
        used = [channels[:, c] for c in range(channels.shape[1]) if np.any(channels[:, c])]
        return bool(used) and all(self._clustered(c) for c in used)

    @property
    def clustered(self) -> bool:
        return self.clustered_per_tensor or self.clustered_per_channel

    @property
    def pruned(self) -> bool:
        return self.sparsity >= PRUNED_SPARSITY_THRESHOLD


def _kernels(model: keras.Model) -> list[_Kernel]:
    """The Conv/Dense/DepthwiseConv kernels of `model`, also inside TFMOT wrappers.

    In a QAT model the float kernel variable is inside the QuantizeWrapper (its `kernel`
    attribute is the fake-quantized tensor), so kernels are found among the layer's variables.
    """
    out = []
    for layer in model.layers:
        inner = layer
        while hasattr(inner, "layer") and isinstance(inner.layer, keras.layers.Layer):
            inner = inner.layer
        for weight in layer.weights:
            short = weight.name.split("/")[-1].split(":")[0]
            if short in ("kernel", "depthwise_kernel"):
                out.append(_Kernel(inner.name, weight.numpy()))
    return out


def resolve_mode(model: keras.Model, mode: QATMode | str = QATMode.AUTO) -> QATMode:
    """The QAT mode to use; `auto` measures the incoming model's kernels.

    A kernel is *pruned* when >= PRUNED_SPARSITY_THRESHOLD (5 %) of it is exactly zero, and
    *clustered* when its non-zero weights take <= MAX_CLUSTERED_UNIQUE (64) distinct values —
    per kernel, or in every output channel (per-channel clustering) — with at least
    MIN_WEIGHTS_PER_VALUE (4) weights per value. (A limit of 256 would be too loose: int8
    quantization alone leaves <= 256 values.) The model is pruned / clustered when any kernel
    is — selective pruning or clustering touches only some layers, and the preserving schemes
    leave unpruned / unclustered kernels free. pruned and clustered -> pcqat, pruned -> pqat,
    clustered -> cqat, neither -> qat.
    """
    mode = enum_param(QATMode, mode, "mode")
    if mode != QATMode.AUTO:
        return mode
    kernels = _kernels(model)
    pruned = [k.layer for k in kernels if k.pruned]
    clustered = [k.layer for k in kernels if k.clustered]
    resolved = {(True, True): QATMode.PCQAT, (True, False): QATMode.PQAT,
                (False, True): QATMode.CQAT, (False, False): QATMode.QAT}[
        (bool(pruned), bool(clustered))]
    logging.info("QAT mode auto -> %s (pruned kernels: %s, clustered kernels: %s)",
                 resolved.value, pruned, clustered)
    return resolved


# ---------------------------------------------------------------------------------------------
# Schemes and support checks (before training)

@keras.utils.register_keras_serializable(package="collabopt")
class ExpandDims(keras.layers.Layer):
    """tf.expand_dims as a layer (EXPAND_DIMS in TFLite, with constant shapes: a Reshape layer
    would compute the batch size at run time, in ops Vela leaves on the CPU)."""

    def __init__(self, axis: int, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, inputs):
        return tf.expand_dims(inputs, self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@keras.utils.register_keras_serializable(package="collabopt")
class Squeeze(keras.layers.Layer):
    """tf.squeeze of one axis as a layer (SQUEEZE in TFLite)."""

    def __init__(self, axis: int, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, inputs):
        return tf.squeeze(inputs, [self.axis])

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class _Conv1DAsConv2D(_transforms.Transform):
    """Quantization-aware training of Conv1D / DepthwiseConv1D as TFMOT's own Conv2D /
    DepthwiseConv2D with a (1, k) kernel, between Reshapes — TFMOT's recipe for SeparableConv1D
    (its SeparableConv1DQuantize). The 2-D layer keeps the 1-D layer's name and weights (with a
    leading axis of 1), so it gets TFMOT's per-output-channel weight quantizer, BatchNorm folding,
    ReLU fusion and the prune- / cluster-preserving quantizers of Conv2D, and converts to the
    EXPAND_DIMS -> CONV_2D -> RESHAPE that post-training quantization of a Conv1D gives. (A 3-D Conv1D
    kernel cannot be quantized per channel in place: TFMOT's LastValueQuantize handles 2-D and
    4-D tensors only, and the TFLite converter rejects per-channel ranges on a kernel that is
    reshaped before the convolution.) Causal padding becomes a ZeroPadding2D on the left."""

    _TARGETS = {"Conv1D": keras.layers.Conv2D, "DepthwiseConv1D": keras.layers.DepthwiseConv2D}

    def pattern(self):
        return _transforms.LayerPattern("|".join(self._TARGETS))

    def replacement(self, match_layer):
        spec = match_layer.layer
        config = dict(spec["config"])
        if config.get("data_format", "channels_last") != "channels_last" or \
                match_layer.metadata.get("quantize_config") is not None or \
                not match_layer.weights:
            return match_layer  # left to the registry, which refuses it by name
        name, padding = config["name"], config["padding"]
        size, dilation = config["kernel_size"][0], config["dilation_rate"][0]
        config.pop("batch_input_shape", None)
        config.update(kernel_size=(1, size), strides=(1, config["strides"][0]),
                      dilation_rate=(1, dilation),
                      padding="valid" if padding == "causal" else padding)
        layer_2d = self._TARGETS[spec["class_name"]].from_config(config)
        weights = collections.OrderedDict(
            (key, np.expand_dims(value, 0) if value.ndim == 3 else value)
            for key, value in match_layer.weights.items())

        def node(layer, inputs, quantize_config, layer_weights=None):
            layer_config = _quantize_utils.serialize_layer(layer, use_legacy_format=True)
            layer_config["name"] = layer.name
            return _transforms.LayerNode(layer_config, weights=layer_weights, input_layers=inputs,
                                         metadata={"quantize_config": quantize_config})

        x = node(ExpandDims(1, name=f"{name}_expand"), [], _default_configs.NoOpQuantizeConfig())
        if padding == "causal":
            x = node(keras.layers.ZeroPadding2D(((0, 0), ((size - 1) * dilation, 0)),
                                                name=f"{name}_causal_pad"), [x],
                     _default_configs.NoOpQuantizeConfig())
        x = node(layer_2d, [x], None, weights)
        return node(Squeeze(1, name=f"{name}_squeeze"), [x],
                    _default_configs.NoOpQuantizeConfig())

    def custom_objects(self):
        return {"NoOpQuantizeConfig": _default_configs.NoOpQuantizeConfig,
                "ExpandDims": ExpandDims, "Squeeze": Squeeze}


_SQUEEZE_CLASS = keras.utils.get_registered_name(Squeeze)  # 'collabopt>Squeeze'


def _squeezed(pattern):
    """`pattern` with _Conv1DAsConv2D's Squeeze in place of TFMOT's 'sepconv1d_squeeze' Lambda."""
    if pattern.class_name == "Lambda":
        return _transforms.LayerPattern(_SQUEEZE_CLASS, inputs=pattern.inputs)
    return _transforms.LayerPattern(pattern.class_name, pattern.config,
                                    [_squeezed(p) for p in pattern.inputs])


class _Conv1DBatchNormReLU(_default_transforms.Conv2DReshapeBatchNormReLUQuantize):
    """TFMOT's Conv2D -> squeeze -> BatchNorm -> ReLU folding, for a rewritten Conv1D."""

    def pattern(self):
        return _squeezed(super().pattern())


class _Conv1DBatchNormActivation(_default_transforms.Conv2DReshapeBatchNormActivationQuantize):
    def pattern(self):
        return _squeezed(super().pattern())


class _Conv1DBatchNorm(_default_transforms.Conv2DReshapeBatchNormQuantize):
    def pattern(self):
        return _squeezed(super().pattern())


class _LayoutTransform(_default_layout.Default8BitQuantizeLayoutTransform):
    """_Conv1DAsConv2D, then the BatchNorm folding of the rewritten Conv1D layers, then TFMOT's
    default 8-bit layout transforms."""

    def apply(self, model, layer_quantize_map):
        for transforms in ([_Conv1DAsConv2D()],
                           [_Conv1DBatchNormReLU(), _Conv1DBatchNormActivation(),
                            _Conv1DBatchNorm()]):
            model, layer_quantize_map = _model_transformer.ModelTransformer(
                model, transforms, set(layer_quantize_map.keys()),
                layer_quantize_map).transform()
        return super().apply(model, layer_quantize_map)


# Layers TFLite int8 and Vela support but TFMOT's Default8BitQuantizeRegistry (0.8.1) lacks
# (Conv1D and DepthwiseConv1D are rewritten by _Conv1DAsConv2D instead), with the QuantizeConfig
# TFMOT gives their counterparts: MaxPooling1D passes its input's scale on (no output quantizer,
# as MaxPooling2D / Reshape); Multiply and Subtract compute new values (output quantized, as
# Add). The registry already has AveragePooling1D and the global poolings (1-D and 2-D). (One
# topology the TFLite converter cannot give scales to: a MaxPooling1D and an AveragePooling1D of
# the same tensor merged again by Add / Subtract; conversion then fails with ConversionError.)
# Anything else it lacks stays refused, with the layer named: BatchNormalization not after a
# convolution or Dense and Rescaling among them (QAT leaves their constants in float, so the
# int8 model would not be full-integer).
_EXTRA_QUANTIZE_CONFIGS = {
    keras.layers.MaxPooling1D: lambda: _default_registry.Default8BitQuantizeConfig([], [], False),
    keras.layers.Multiply: lambda: _default_registry.Default8BitQuantizeConfig([], [], True),
    keras.layers.Subtract: lambda: _default_registry.Default8BitQuantizeConfig([], [], True),
}


class _Default8BitRegistry(_default_registry.Default8BitQuantizeRegistry):
    """TFMOT's default 8-bit registry and the layers it lacks (_EXTRA_QUANTIZE_CONFIGS)."""

    def supports(self, layer):
        return type(layer) in _EXTRA_QUANTIZE_CONFIGS or super().supports(layer)

    def get_quantize_config(self, layer):
        extra = _EXTRA_QUANTIZE_CONFIGS.get(type(layer))
        return extra() if extra is not None else super().get_quantize_config(layer)


class _ExtendedPreserveRegistry:
    """Mixin for TFMOT's prune- and cluster-preserve registries: they start from
    _Default8BitRegistry (TFMOT's from a fresh Default8BitQuantizeRegistry()); the extra layers
    hold no kernel to preserve, so their configs stay as _Default8BitRegistry makes them. (Conv1D
    reaches the registry as a Conv2D, whose zeros and clusters TFMOT's registries keep.)"""

    @classmethod
    def supports(cls, layer):
        return _Default8BitRegistry().supports(layer) and (
            type(layer) in _EXTRA_QUANTIZE_CONFIGS or super().supports(layer))

    def get_quantize_config(self, layer):
        config = _Default8BitRegistry().get_quantize_config(layer)
        if type(layer) in _EXTRA_QUANTIZE_CONFIGS:
            return config
        return self.preserving_config(layer, config)


class _PrunePreserveRegistry(_ExtendedPreserveRegistry,
                             _pqat_registry.Default8bitPrunePreserveQuantizeRegistry):
    def preserving_config(self, layer, config):
        return self.apply_sparsity_preserve_quantize_config(layer, config)


class _ClusterPreserveRegistry(_ExtendedPreserveRegistry,
                               _cqat_registry.Default8bitClusterPreserveQuantizeRegistry):
    def preserving_config(self, layer, config):
        return self.apply_cluster_preserve_quantize_config(layer, config)


class _PerLayerClusterPreserveRegistry(_ClusterPreserveRegistry):
    """The cluster-preserve registry, with one weight quantizer per layer.

    TFMOT hands the *same* ClusterPreserve quantizer instance to every Dense (and every Conv2D)
    layer, and that quantizer switches itself from PCQAT to CQAT (`preserve_sparsity = False`)
    when it is built for a layer without zeros. With selective pruning, a later unpruned layer
    then silently turns PCQAT into CQAT for the pruned ones and their zeros are lost. A copy per
    layer keeps the decision per layer, as intended.
    """

    def get_quantize_config(self, layer):
        config = super().get_quantize_config(layer)
        quantizer = getattr(config, "weight_quantizer", None)
        if isinstance(quantizer, _cqat_registry.ClusterPreserveDefaultWeightsQuantizer):
            config.weight_quantizer = copy.copy(quantizer)
        return config


class _Default8BitScheme(tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme):
    def get_layout_transformer(self):
        return _LayoutTransform()

    def get_quantize_registry(self):
        return _Default8BitRegistry(disable_per_axis=self._disable_per_axis)


class _PrunePreserveScheme(tfmot.quantization.keras.collab_opts.Default8BitPrunePreserveQuantizeScheme):
    def get_layout_transformer(self):
        return _LayoutTransform()

    def get_quantize_registry(self):
        return _PrunePreserveRegistry()


class _PerLayerClusterPreserveScheme(
        tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme):
    def get_layout_transformer(self):
        return _LayoutTransform()

    def get_quantize_registry(self):
        return _PerLayerClusterPreserveRegistry(self.preserve_sparsity)


def _scheme(mode: QATMode):
    """The QuantizeScheme of a (resolved) mode: TFMOT's, with the layers it lacks."""
    if mode == QATMode.QAT:
        return _Default8BitScheme()
    if mode == QATMode.PQAT:
        return _PrunePreserveScheme()
    return _PerLayerClusterPreserveScheme(preserve_sparsity=mode == QATMode.PCQAT)


_UNSUPPORTED = re.compile(r"Layer (.+?):<class '([^']+)'> is not supported")


def _quantize(model: keras.Model, mode: QATMode) -> keras.Model:
    """quantize_annotate_model + quantize_apply(scheme) on a copy of `model`: the QAT model.

    This is also the support check: TFMOT's layout transforms fold Conv2D+BatchNormalization
    and split SeparableConv2D, so only quantize_apply itself knows what it can wrap. When it
    refuses a layer, the layer is left unannotated and quantize_apply retried, so the error names
    every unsupported layer at once.
    """
    ensure_functional(model, "quantization-aware training")
    wrapped = [layer.name for layer in model.layers
               if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper)
               or type(layer).__name__ in ("QuantizeAnnotate", "QuantizeLayer")]
    if wrapped:
        raise UnsupportedModelError(
            f"Model '{model.name}' is already quantization-aware (layers {wrapped}). Apply QAT "
            "to the float model it came from.")
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        raise UnsupportedLayerError(
            f"Quantizing a keras Model inside another keras Model is not supported (TFMOT): "
            f"{nested}. Rebuild the model so the inner model's layers are layers of the outer "
            "one.", nested)

    scheme = _scheme(mode)
    base = clone_with_weights(model)
    refused: dict[str, str] = {}  # layer name -> class name

    def annotate(layer):
        if layer.name in refused or isinstance(layer, keras.layers.Lambda):
            return layer  # TFMOT itself leaves Lambda layers unquantized (with a warning).
        return tfmot.quantization.keras.quantize_annotate_layer(layer)

    def unsupported_error(detail: str) -> UnsupportedLayerError:
        described = ", ".join(f"'{name}' ({cls})" for name, cls in refused.items())
        return UnsupportedLayerError(
            f"TFMOT's 8-bit quantization scheme ({mode.value}, with collabopt's additions) does "
            f"not support layer(s) {described}, so {mode.value} cannot wrap model "
            f"'{model.name}'{detail}. Replace them with supported layers (Conv1D/2D, "
            "DepthwiseConv1D/2D, SeparableConv1D/2D, Dense, BatchNormalization after a "
            "convolution or Dense, pooling, ReLU, Add, Multiply, Concatenate, ...), or skip QAT "
            "for this model: the post-training int8 leaf needs no QAT.", list(refused))

    while True:
        annotated = keras.models.clone_model(base, clone_function=annotate)
        try:
            with tfmot.quantization.keras.quantize_scope():
                qat_model = tfmot.quantization.keras.quantize_apply(annotated, scheme=scheme)
        except RuntimeError as exc:
            found = _UNSUPPORTED.search(str(exc))
            if found is None or found.group(1) in refused or len(refused) >= len(model.layers):
                raise UnsupportedModelError(
                    f"TFMOT could not apply {mode.value} to model '{model.name}': {exc}") from exc
            refused[found.group(1)] = found.group(2).rsplit(".", 1)[-1]
            continue
        except ValueError as exc:
            lambdas = [layer.name for layer in model.layers
                       if isinstance(layer, keras.layers.Lambda)]
            if lambdas and "Lambda" in str(exc):
                raise UnsupportedLayerError(
                    f"TFMOT cannot rebuild the Lambda layer(s) {lambdas} of model '{model.name}' "
                    f"for {mode.value}: {exc} Replace each Lambda by built-in layers (e.g. "
                    "Rescaling, ReLU, Reshape) or by a custom layer class with get_config().",
                    lambdas) from exc
            if refused:
                raise unsupported_error(f" ({exc})") from exc
            raise UnsupportedModelError(
                f"TFMOT could not apply {mode.value} to model '{model.name}': {exc}") from exc
        if refused:
            raise unsupported_error("")
        return qat_model


def check_quantizable(model: keras.Model, mode: QATMode | str = QATMode.QAT) -> keras.Model:
    """Raises before any training when TFMOT's 8-bit QAT (scheme of `mode`) cannot wrap `model`.

    UnsupportedModelError: subclassed model, or a model that is already quantization-aware.
    UnsupportedLayerError: layer(s) the scheme does not support; `.layers` names all of them.
    `mode` is optional (an extension of the contract); auto is resolved first. The check runs
    quantize_apply on a copy (no training): seconds for a small model. Returns that untrained
    quantization-aware copy (e.g. to try its int8 conversion).
    """
    return _quantize(model, resolve_mode(model, mode))


def unquantized_layers(model: keras.Model) -> dict[str, str]:
    """Layers QAT leaves in float, with why: TFMOT does not quantize Lambda layers."""
    return {layer.name: "TFMOT leaves Lambda layers unquantized"
            for layer in model.layers if isinstance(layer, keras.layers.Lambda)}


# ---------------------------------------------------------------------------------------------
# Quantization-aware training

def _verify(before: list[_Kernel], after: list[_Kernel], mode: QATMode) -> None:
    after_by_layer = {k.layer: k for k in after}
    problems = []
    for kernel in before:
        result = after_by_layer.get(kernel.layer)
        if result is None:
            continue
        if mode.preserves_sparsity and kernel.pruned \
                and result.sparsity < kernel.sparsity - SPARSITY_TOLERANCE:
            problems.append(f"'{kernel.layer}' sparsity fell from {kernel.sparsity:.1%} to "
                            f"{result.sparsity:.1%}")
        if mode.preserves_clusters and kernel.clustered:
            # Compare what TFMOT's CQAT keeps: with centroids per channel, the kernel as a whole
            # may end with up to clusters x channels values, so count per channel; with shared
            # centroids a channel may end using one it did not use before, so count per tensor.
            # A kernel clustered per channel on the way in is counted per channel either way.
            per_channel = kernel.cqat_keeps_channels or not kernel.clustered_per_tensor
            was, now = kernel.unique(per_channel), result.unique(per_channel)
            if now > was:
                problems.append(f"'{kernel.layer}' unique values"
                                f"{' per channel' if per_channel else ''} rose from {was} to {now}")
    if problems:
        raise StructureLostError(
            f"{mode.value.upper()} did not preserve the incoming structure: {problems}.")


def quantize_aware_train(model: keras.Model, train_ds: tf.data.Dataset,
                         mode: QATMode | str, training: training_lib.TrainingParams,
                         verbose: int = 0,
                         validation_ds: tf.data.Dataset | None = None) -> keras.Model:
    """Quantization-aware fine-tuning of `model` with the scheme of `mode` (auto is resolved).

    Fine-tuning runs until the QAT model's accuracy on `validation_ds` is back near the float
    input's (training.epochs None) or exactly training.epochs epochs. The input model is not
    changed. Returns the QAT model (QuantizeWrapperV2 layers; not necessarily compiled) with its
    FineTuning record (training.fine_tuning_of). For pqat/cqat/pcqat it verifies that the
    sparsity / clusters of the input survived and raises StructureLostError otherwise.
    """
    training_lib.seed_step(training)
    mode = resolve_mode(model, mode)
    training = dataclasses.replace(
        training, from_logits=training_lib.resolve_from_logits(model, training))
    before = _kernels(model)
    reference = training_lib.reference_accuracy(model, training, validation_ds)
    qat_model = _quantize(model, mode)
    logging.info("%s fine-tuning of '%s'", mode.value.upper(), model.name)
    record = training_lib.fine_tune(qat_model, train_ds, training, verbose=verbose,
                                    validation_ds=validation_ds, reference=reference)
    if mode.preserves_clusters:
        qat_model = tfmot.experimental.combine.strip_clustering_cqat(qat_model)
    _verify(before, _kernels(qat_model), mode)
    return training_lib.attach_fine_tuning(qat_model, record)


# ---------------------------------------------------------------------------------------------
# The model format

def _custom_objects() -> dict:
    """Classes TFMOT may reference in a saved model beyond quantize_scope's own."""
    return {
        "ClusterPreserveDefault8BitWeightsQuantizer":
            _cqat_registry.ClusterPreserveDefault8BitWeightsQuantizer,
        "ClusterPreserveDefault8BitConvWeightsQuantizer":
            _cqat_registry.ClusterPreserveDefault8BitConvWeightsQuantizer,
        "PrunePreserveDefault8BitWeightsQuantizer":
            _pqat_registry.PrunePreserveDefault8BitWeightsQuantizer,
        "PrunePreserveDefault8BitConvWeightsQuantizer":
            _pqat_registry.PrunePreserveDefault8BitConvWeightsQuantizer,
    }


def save_model(model: keras.Model, path: str) -> None:
    """Writes `model` as a Keras SavedModel directory at `path` (no optimizer state)."""
    if not isinstance(model, keras.Model):
        raise CollaboptError(
            f"save_model needs a tf_keras Model, got {type(model).__name__}; nothing was written "
            f"to '{path}'.")
    path = os.fspath(path)
    try:
        model.save(path, save_format="tf", include_optimizer=False)
    except Exception as exc:  # noqa: BLE001 — any failure leaves no usable model
        raise CollaboptError(f"Could not save model '{model.name}' to '{path}': {exc}") from exc
    logging.info("Saved model '%s' to %s", model.name, path)


def load_model(path: str) -> keras.Model:
    """Loads a Keras model saved by `save_model` (or by tf_keras `model.save`).

    Works for plain, pruned, clustered and QAT/PQAT/CQAT/PCQAT models. Also accepts a TFX Model
    artifact directory holding `Format-Serving/`. Raises ModelLoadError naming the path and the
    fix when nothing is there or it cannot be read as a Keras model.
    """
    path = os.fspath(path)
    if not tf.io.gfile.exists(path):
        raise ModelLoadError(
            f"No model at '{path}'. Point at the directory written by save_model (a Keras "
            f"SavedModel directory containing {SAVED_MODEL_FILE}), or at a .h5/.keras file "
            "written by tf_keras.")
    if tf.io.gfile.isdir(path) and not tf.io.gfile.exists(os.path.join(path, SAVED_MODEL_FILE)):
        serving = os.path.join(path, "Format-Serving")
        if tf.io.gfile.exists(os.path.join(serving, SAVED_MODEL_FILE)):
            path = serving
        else:
            raise ModelLoadError(
                f"'{path}' is a directory without {SAVED_MODEL_FILE}, so it is not a SavedModel. "
                "Point at the model directory itself (written by save_model or tf_keras "
                "model.save), not at its parent.")
    try:
        with tfmot.quantization.keras.quantize_scope(_custom_objects()), \
                tfmot.sparsity.keras.prune_scope(), tfmot.clustering.keras.cluster_scope():
            model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 — corrupt files fail in many ways
        raise ModelLoadError(
            f"Could not load a Keras model from '{path}': {type(exc).__name__}: {exc}. The "
            "file is corrupt or was not written by tf_keras; re-export the model with "
            "collabopt.components.core.qat.save_model (tf_keras, TF_USE_LEGACY_KERAS=1).") from exc
    if not isinstance(model, keras.Model):
        raise ModelLoadError(
            f"'{path}' holds a TensorFlow SavedModel without Keras metadata (e.g. from "
            "tf.saved_model.save or Keras 3), not a tf_keras model. Save the model with tf_keras "
            "`model.save(path)` or collabopt.components.core.qat.save_model.")
    return model


__all__ = ["QATMode", "resolve_mode", "check_quantizable", "unquantized_layers",
           "quantize_aware_train", "ExpandDims", "Squeeze",
           "save_model", "load_model", "PRUNED_SPARSITY_THRESHOLD", "MAX_CLUSTERED_UNIQUE"]
