"""Weight clustering with TFMOT: cluster_weights, fine-tune, strip_clustering.

What is clustered:
  * `layers=None`: every layer whose weights TFMOT clusters (Conv1D/2D/3D, Dense, Embedding,
    SeparableConv pointwise kernels, LSTM/GRU/SimpleRNN, MultiHeadAttention, ...). Layers
    without weights (Flatten, MaxPooling2D, Dropout, ...) are left unwrapped, and so are layers
    TFMOT supports but has nothing to cluster in (BatchNormalization, DepthwiseConv2D).
  * `layers=("conv2", "dense1")`: only those layers (selective clustering with
    `clone_model(..., clone_function=...)`); every other layer keeps its weights.

`number_of_clusters` is the number of unique values each clustered kernel ends with. With
`preserve_sparsity` the zeros of a pruned kernel stay zero (zero is one of the clusters).

`cluster_per_channel` applies to Conv2D kernels only: each output channel gets its own
`number_of_clusters` centroids (so a kernel has up to number_of_clusters x channels unique
values, and each channel's values map onto the per-channel int8 scale). TFMOT ignores the flag
for every other layer: Dense (and Conv1D, Embedding, ...) kernels are clustered per tensor, to at
most `number_of_clusters` unique values per kernel. A Conv2D with too few weights per cluster
(<= number_of_clusters weights per channel, or per kernel without per-channel) cannot be
clustered: with `layers=None` it is left unclustered (TFMOT's behaviour, logged), naming it in
`layers` is an error.

Support is checked *before* any training (`check_clusterable`) from TFMOT's clustering registry.
"""
from __future__ import annotations

import dataclasses
import enum
import logging

import numpy as np

from collabopt.components.core import training as training_lib
from collabopt.components.core.errors import (ConfigError, StructureLostError, UnsupportedLayerError,
                                    UnsupportedModelError)
from collabopt.components.core.keras_compat import keras, tf, tfmot
from collabopt.components.core.pruning import (LayerPlan, enum_param, is_int, layer_names_param,
                                               clone_with_weights, split_candidates,
                                               supported_candidates)
# TFMOT's registry of what it can cluster is not in its public API; keras_compat (above) has
# already set TF_USE_LEGACY_KERAS, so importing the module directly is safe.
from tensorflow_model_optimization.python.core.clustering.keras import (  # noqa: E402
    cluster as tfmot_cluster, clustering_registry)

# More clusters than int8 has values cannot survive quantization.
MAX_CLUSTERS = 256
# How far the zero fraction of a kernel may drop under preserve_sparsity before it is a failure.
SPARSITY_TOLERANCE = 0.005


class CentroidInitialization(str, enum.Enum):
    KMEANS_PLUS_PLUS = "kmeans_plus_plus"
    LINEAR = "linear"
    RANDOM = "random"
    DENSITY_BASED = "density_based"

    @property
    def tfmot(self):
        return tfmot.clustering.keras.CentroidInitialization[self.name]


@dataclasses.dataclass(frozen=True)
class ClusteringParams:
    """Parameters of cluster_weights, in TFMOT's words.

    number_of_clusters: unique values per clustered kernel (per output channel with
        cluster_per_channel), in [2, 256]; [3, 256] with preserve_sparsity (one is zero).
    cluster_centroids_init: kmeans_plus_plus, linear, random or density_based.
    preserve_sparsity: keep the zeros of a pruned model (sparsity-preserving clustering).
    cluster_per_channel: cluster each output channel of Conv2D kernels separately.
    layers: names of the layers to cluster; None clusters every layer with weights.
    """

    number_of_clusters: int = 8
    cluster_centroids_init: CentroidInitialization = CentroidInitialization.KMEANS_PLUS_PLUS
    preserve_sparsity: bool = False
    cluster_per_channel: bool = False
    layers: tuple[str, ...] | None = None

    def __post_init__(self):
        for field in ("preserve_sparsity", "cluster_per_channel"):
            if not isinstance(getattr(self, field), bool):
                raise ConfigError(f"{field} must be true or false, got {getattr(self, field)!r}")
        low = 3 if self.preserve_sparsity else 2
        if not is_int(self.number_of_clusters) \
                or not low <= self.number_of_clusters <= MAX_CLUSTERS:
            reason = " (one cluster is kept at zero with preserve_sparsity)" \
                if self.preserve_sparsity else ""
            raise ConfigError(
                f"number_of_clusters must be an integer in range [{low}, {MAX_CLUSTERS}]{reason}, "
                f"got {self.number_of_clusters!r}")
        object.__setattr__(self, "number_of_clusters", int(self.number_of_clusters))
        object.__setattr__(self, "cluster_centroids_init", enum_param(
            CentroidInitialization, self.cluster_centroids_init, "cluster_centroids_init"))
        object.__setattr__(self, "layers", layer_names_param(self.layers, "layers"))


# ---------------------------------------------------------------------------------------------
# Support checks (before training)

_REGISTRY = clustering_registry.ClusteringRegistry


def _clusterable(layer) -> bool:
    return (isinstance(layer, tfmot.clustering.keras.ClusterableLayer)
            or _REGISTRY.supports(layer))


def _clusters_weights(layer) -> bool:
    """Whether TFMOT would actually cluster weights of this (supported) layer."""
    if isinstance(layer, tfmot.clustering.keras.ClusterableLayer):
        return True
    if not layer.trainable_weights:
        return False
    weights = _REGISTRY._LAYERS_WEIGHTS_MAP.get(type(layer))  # noqa: SLF001
    return weights is None or bool(weights)  # None: RNN / MHA layers, clustered by TFMOT


def _weights_per_cluster_group(layer, per_channel: bool) -> int:
    """Kernel weights that share one set of centroids (as TFMOT counts them)."""
    size = int(np.prod(layer.kernel.shape))
    if per_channel:
        channel_idx = 1 if layer.data_format == "channels_first" else -1
        return size // int(np.prod(layer.trainable_weights[channel_idx].shape))
    return size


def plan_clustering(model: keras.Model, params: ClusteringParams) -> LayerPlan:
    """The layers cluster() wraps with cluster_weights and why it skips the others; raises (as
    check_clusterable) when clustering is impossible."""
    candidates = supported_candidates(
        model, params.layers, "clustering", _clusterable, "ClusteringRegistry",
        "tfmot.clustering.keras.ClusterableLayer (get_clusterable_weights)")
    selected, skipped = split_candidates(model, params.layers, "clustering", candidates,
                                         _clusters_weights, "clusters")

    too_small = {}
    for layer in selected:
        if isinstance(layer, keras.layers.Conv2D) and not \
                tfmot_cluster.layer_has_enough_weights_to_cluster(
                    layer, params.number_of_clusters, params.cluster_per_channel):
            too_small[layer.name] = _weights_per_cluster_group(layer, params.cluster_per_channel)
    group = "per output channel" if params.cluster_per_channel else "per kernel"
    if too_small and params.layers is not None:
        raise UnsupportedLayerError(
            f"Layer(s) {sorted(too_small)} have only {sorted(set(too_small.values()))} weights "
            f"{group}, not more than number_of_clusters={params.number_of_clusters}, so TFMOT "
            "will not cluster them. Remove them from `layers`, lower number_of_clusters"
            f"{', or set cluster_per_channel=false' if params.cluster_per_channel else ''}.",
            sorted(too_small))
    if too_small:
        logging.warning("Not clustering %s: too few weights for %d clusters.", sorted(too_small),
                        params.number_of_clusters)
    for name, weights in too_small.items():
        skipped[name] = (f"only {weights} weights {group}, not more than number_of_clusters="
                         f"{params.number_of_clusters}")
    selected = [layer for layer in selected if layer.name not in too_small]
    if not selected:
        raise UnsupportedModelError(
            f"No layer of model '{model.name}' can be clustered with these parameters "
            f"(layers={list(params.layers) if params.layers else None}, number_of_clusters="
            f"{params.number_of_clusters}). Name layers with Dense/Conv kernels in `layers`.")
    return LayerPlan(tuple(layer.name for layer in selected), skipped)


def _plan(model, params: ClusteringParams) -> list[str]:
    return list(plan_clustering(model, params).wrapped)


def check_clusterable(model: keras.Model, params: ClusteringParams) -> None:
    """Raises before any training when `model` cannot be clustered with `params`.

    UnsupportedModelError: subclassed model, or no layer left to cluster.
    UnsupportedLayerError: a layer to cluster is not supported by TFMOT (`.layers` names them),
        or a named Conv2D has too few weights for the clusters.
    ConfigError: `params.layers` names layers that do not exist or have no weights.
    """
    _plan(model, params)


# ---------------------------------------------------------------------------------------------
# Clustering

def _clustered_kernels(layer) -> list:
    """The weights TFMOT clustered in a (stripped) layer: its kernels / embeddings."""
    out = []
    for weight in layer.trainable_weights:
        short = weight.name.split("/")[-1].split(":")[0]
        # SeparableConv's depthwise kernel is not clustered by TFMOT (its pointwise kernel is).
        if ("kernel" in short and short != "depthwise_kernel") or short == "embeddings":
            out.append(weight)
    return out


def _max_unique(values: np.ndarray, per_channel: bool) -> int:
    if per_channel:
        channels = values.reshape(-1, values.shape[-1])
        return max(len(np.unique(channels[:, c])) for c in range(channels.shape[1]))
    return len(np.unique(values))


def cluster(model: keras.Model, train_ds: tf.data.Dataset, params: ClusteringParams,
            training: training_lib.TrainingParams, verbose: int = 0,
            validation_ds: tf.data.Dataset | None = None) -> keras.Model:
    """Clusters `model` while fine-tuning it on `train_ds`; returns the stripped model.

    Fine-tuning runs until the accuracy on `validation_ds` recovered (training.epochs None) or
    exactly training.epochs epochs. The input model is not changed. The result has the same
    layers and names as the input (no TFMOT wrappers), is not compiled, and carries its
    FineTuning record (training.fine_tuning_of). Raises StructureLostError if a clustered kernel
    ends with more unique values than promised, or preserve_sparsity lost zeros.
    """
    training_lib.seed_step(training)
    to_cluster = set(_plan(model, params))
    training = dataclasses.replace(
        training, from_logits=training_lib.resolve_from_logits(model, training))
    reference = training_lib.reference_accuracy(model, training, validation_ds)

    def wrap(layer):
        if layer.name in to_cluster:
            return tfmot.clustering.keras.cluster_weights(
                layer,
                number_of_clusters=params.number_of_clusters,
                cluster_centroids_init=params.cluster_centroids_init.tfmot,
                preserve_sparsity=params.preserve_sparsity,
                cluster_per_channel=params.cluster_per_channel)
        return layer

    base = clone_with_weights(model)
    zeros_before = {layer.name: [float(np.mean(w.numpy() == 0)) for w in _clustered_kernels(layer)]
                    for layer in base.layers if layer.name in to_cluster}
    try:
        clustered = keras.models.clone_model(base, clone_function=wrap)
    except (tf.errors.InvalidArgumentError, ValueError) as exc:
        # TFMOT initialises the centroids when it builds the wrappers, before any training.
        raise UnsupportedModelError(
            f"TFMOT could not initialise {params.number_of_clusters} cluster centroids "
            f"({params.cluster_centroids_init.value}) for {sorted(to_cluster)}: {exc}. A kernel "
            "has fewer weights (of one sign, with preserve_sparsity) than clusters: lower "
            "number_of_clusters, use cluster_centroids_init=linear, or leave small layers out of "
            "`layers`.") from exc
    logging.info("Clustering %s of '%s' to %d clusters", sorted(to_cluster), model.name,
                 params.number_of_clusters)
    record = training_lib.fine_tune(clustered, train_ds, training, verbose=verbose,
                                    validation_ds=validation_ds, reference=reference)
    stripped = tfmot.clustering.keras.strip_clustering(clustered)

    problems = []
    for layer in stripped.layers:
        if layer.name not in to_cluster:
            continue
        per_channel = params.cluster_per_channel and isinstance(layer, keras.layers.Conv2D) \
            and layer.data_format == "channels_last"
        for i, weight in enumerate(_clustered_kernels(layer)):
            values = weight.numpy()
            unique = _max_unique(values, per_channel)
            if unique > params.number_of_clusters:
                problems.append(f"{weight.name} has {unique} unique values"
                                f"{' in a channel' if per_channel else ''}")
            if params.preserve_sparsity:
                before = zeros_before[layer.name][i]
                after = float(np.mean(values == 0))
                if after < before - SPARSITY_TOLERANCE:
                    problems.append(f"{weight.name} sparsity fell from {before:.1%} to {after:.1%}")
    if problems:
        raise StructureLostError(
            f"Clustering to {params.number_of_clusters} clusters did not hold: {problems}.")
    return training_lib.attach_fine_tuning(stripped, record)


__all__ = ["CentroidInitialization", "ClusteringParams", "plan_clustering", "check_clusterable",
           "cluster",
           "MAX_CLUSTERS"]
