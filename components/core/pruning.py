"""Magnitude pruning with TFMOT: prune_low_magnitude, fine-tune with UpdatePruningStep, strip.

What is pruned:
  * `layers=None`: every layer that holds weights. Layers without weights (Flatten, MaxPooling2D,
    Dropout, Reshape, ...) are left unwrapped — there is nothing in them to prune.
  * `layers=("conv2", "dense1")`: only those layers (selective pruning, the TFMOT guide's
    `clone_model(..., clone_function=...)` recipe); every other layer keeps its weights as-is.
  * `pruning_policy="prune_for_latency_on_xnnpack"`: TFMOT's PruneForLatencyOnXNNPack, which
    prunes only 1x1 Conv2D layers and first checks that the model has the subgraph XNNPACK's
    sparse inference needs.
  * `sparsity_m_by_n=(2, 4)`: structured sparsity — at least m zeros in every n consecutive
    weights along the input-channel axis (TFLite's last kernel axis). TFMOT supports it for
    Dense and Conv2D kernels; the schedule's sparsity is then ignored (the mask is set at the
    first step). Other layers (Conv1D, LSTM, ...) and layers whose input-channel count is not a
    multiple of n (e.g. a first convolution on a 1- or 3-channel image) cannot hold the
    pattern: with `layers=None` they are left dense (and logged), naming one in `layers` is an
    error.

Support is checked *before* any training (`check_prunable`) from TFMOT's prune registry; the
error names the layers and the way out.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import math

import numpy as np

from collabopt.components.core import training as training_lib
from collabopt.components.core.errors import (ConfigError, StructureLostError, UnsupportedLayerError,
                                    UnsupportedModelError)
from collabopt.components.core.keras_compat import keras, tf, tfmot
# TFMOT's registry of what it can prune is not in its public API; keras_compat (above) has already
# set TF_USE_LEGACY_KERAS, so importing the module directly is safe.
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry  # noqa: E402

# How far below the target a pruned kernel's measured sparsity may fall before we call the
# pruning failed (ties and rounding of the threshold make it inexact on tiny kernels).
SPARSITY_TOLERANCE = 0.02


class PruningSchedule(str, enum.Enum):
    CONSTANT_SPARSITY = "constant_sparsity"
    POLYNOMIAL_DECAY = "polynomial_decay"


class PruningPolicy(str, enum.Enum):
    PRUNE_FOR_LATENCY_ON_XNNPACK = "prune_for_latency_on_xnnpack"


def enum_param(enum_cls, value, field: str):
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum_cls)
        raise ConfigError(f"{field} must be one of {allowed}, got {value!r}") from None


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def layer_names_param(value, field: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = (value,)
    names = tuple(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(
            f"{field} must be null (all layers) or a non-empty list of layer names, got {value!r}")
    return names


@dataclasses.dataclass(frozen=True)
class PruningParams:
    """Parameters of prune_low_magnitude, in TFMOT's words.

    target_sparsity: fraction of each pruned kernel set to zero, in [0, 1).
    pruning_schedule: constant_sparsity (ConstantSparsity(target_sparsity)) or polynomial_decay
        (PolynomialDecay from initial_sparsity to target_sparsity between begin_step and end_step).
    initial_sparsity: polynomial_decay's starting sparsity, in [0, target_sparsity].
    begin_step / end_step: training steps (batches) where pruning starts / ends. end_step None
        means the last step of fine-tuning, so the target is reached when fine-tuning ends.
    frequency: the mask is updated every `frequency` steps (>= 1).
    sparsity_m_by_n: (m, n) with 0 < m < n, e.g. (2, 4); see the module docstring.
    pruning_policy: None or "prune_for_latency_on_xnnpack".
    layers: names of the layers to prune; None prunes every layer with weights.
    """

    target_sparsity: float = 0.5
    pruning_schedule: PruningSchedule = PruningSchedule.POLYNOMIAL_DECAY
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: int | None = None
    frequency: int = 10
    sparsity_m_by_n: tuple[int, int] | None = None
    pruning_policy: PruningPolicy | None = None
    layers: tuple[str, ...] | None = None

    def __post_init__(self):
        for field in ("target_sparsity", "initial_sparsity"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
                    or not math.isfinite(value) or not 0.0 <= value < 1.0:
                raise ConfigError(f"`{field}` must be in range [0,1), got {value!r}")
            object.__setattr__(self, field, float(value))
        object.__setattr__(self, "pruning_schedule",
                           enum_param(PruningSchedule, self.pruning_schedule, "pruning_schedule"))
        if (self.pruning_schedule == PruningSchedule.POLYNOMIAL_DECAY
                and self.initial_sparsity > self.target_sparsity):
            raise ConfigError(
                f"initial_sparsity ({self.initial_sparsity}) must be <= target_sparsity "
                f"({self.target_sparsity}) for the polynomial_decay schedule")
        if not is_int(self.begin_step) or self.begin_step < 0:
            raise ConfigError(f"begin_step must be an integer >= 0, got {self.begin_step!r}")
        if self.end_step is not None:
            if not is_int(self.end_step) or self.end_step < self.begin_step:
                raise ConfigError(
                    f"end_step must be null (end of fine-tuning) or an integer >= begin_step "
                    f"({self.begin_step}), got {self.end_step!r}")
            if (self.pruning_schedule == PruningSchedule.POLYNOMIAL_DECAY
                    and self.end_step == self.begin_step):
                raise ConfigError(
                    f"end_step must be > begin_step ({self.begin_step}) for the polynomial_decay "
                    "schedule, which ramps the sparsity up between them")
        if not is_int(self.frequency) or self.frequency < 1:
            raise ConfigError(f"frequency must be an integer >= 1, got {self.frequency!r}")
        if self.sparsity_m_by_n is not None:
            m_by_n = self.sparsity_m_by_n
            if isinstance(m_by_n, str) or len(tuple(m_by_n)) != 2 \
                    or not all(is_int(v) for v in m_by_n):
                raise ConfigError(
                    "sparsity_m_by_n must be a pair of integers (m, n), e.g. (2, 4), "
                    f"got {m_by_n!r}")
            m, n = (int(v) for v in m_by_n)
            if not 0 < m < n:
                raise ConfigError(
                    f"sparsity_m_by_n (m, n) needs 0 < m < n (m zeros in every n weights), "
                    f"got {(m, n)}")
            object.__setattr__(self, "sparsity_m_by_n", (m, n))
        if self.pruning_policy is not None:
            object.__setattr__(self, "pruning_policy",
                               enum_param(PruningPolicy, self.pruning_policy, "pruning_policy"))
        object.__setattr__(self, "layers", layer_names_param(self.layers, "layers"))

    @property
    def expected_sparsity(self) -> float:
        """The sparsity every pruned kernel must reach."""
        if self.sparsity_m_by_n is not None:
            m, n = self.sparsity_m_by_n
            return m / n
        return self.target_sparsity


# ---------------------------------------------------------------------------------------------
# Support checks (before training)

def ensure_functional(model, technique: str) -> None:
    """UnsupportedModelError unless `model` is a Sequential or Functional Keras model."""
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"{technique} needs a tf_keras Model, got {type(model).__name__}. Load the model with "
            "collabopt.components.core.qat.load_model (tf_keras, TF_USE_LEGACY_KERAS=1).")
    if not isinstance(model, keras.Sequential) and not model._is_graph_network:  # noqa: SLF001
        raise UnsupportedModelError(
            f"Subclassed models are not supported currently (TFMOT {technique}): "
            f"{type(model).__name__} is a subclassed keras.Model. Rebuild it as a Sequential or "
            "Functional model (keras.Model(inputs, outputs)) from the same layers and load its "
            "weights.")


def resolve_layers(model: keras.Model, names: tuple[str, ...] | None) -> list:
    """The layers named in `names` (ConfigError for unknown names), or all with weights."""
    if names is None:
        return [layer for layer in model.layers if layer.weights]
    by_name = {layer.name: layer for layer in model.layers}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(
            f"layers {unknown} are not in model '{model.name}'. Its layers are "
            f"{[layer.name for layer in model.layers]}.")
    empty = [n for n in names if not by_name[n].weights]
    if empty:
        raise ConfigError(
            f"layers {empty} have no weights to optimize; name only layers with weights "
            "(e.g. Conv2D, Dense).")
    return [by_name[n] for n in names]


def supported_candidates(model, names: tuple[str, ...] | None, technique: str, supported,
                         registry: str, protocol: str) -> list:
    """The layers to wrap (all with weights, or those `names` lists), checked before training:
    a subclassed or nested model, or a layer TFMOT cannot wrap, raises an error naming the way out.

    `supported(layer)` asks TFMOT's `registry`; `protocol` is the tfmot interface a custom layer
    can implement instead (e.g. 'tfmot.sparsity.keras.PrunableLayer (get_prunable_weights)').
    """
    ensure_functional(model, technique)
    candidates = resolve_layers(model, names)
    nested_model_error(candidates, technique)
    unsupported = [layer for layer in candidates if not supported(layer)]
    if unsupported:
        described = ", ".join(f"'{layer.name}' ({type(layer).__name__})" for layer in unsupported)
        raise UnsupportedLayerError(
            f"TFMOT cannot apply {technique} to layer(s) {described}: they are not supported by "
            f"the {registry} and do not implement its layer interface. Either skip them by "
            f"listing only the layers to optimize in `layers`, replace them with built-in layers "
            "TFMOT supports (Conv1D/2D/3D, Dense, LSTM/GRU, Embedding, ...), or make them "
            f"implement {protocol}.",
            [layer.name for layer in unsupported])
    return candidates


def nested_model_error(layers: list, technique: str) -> None:
    nested = [layer.name for layer in layers if isinstance(layer, keras.Model)]
    if nested:
        raise UnsupportedLayerError(
            f"Layers {nested} are nested models; collabopt {technique} works on one flat "
            "Sequential or Functional model. Rebuild the model so that the inner model's layers "
            "are layers of the outer one.", nested)


def _prunable(layer) -> bool:
    return (isinstance(layer, tfmot.sparsity.keras.PrunableLayer)
            or hasattr(layer, "get_prunable_weights")
            or prune_registry.PruneRegistry.supports(layer))


def _prunes_weights(layer) -> bool:
    """Whether TFMOT would actually zero weights of this (supported) layer."""
    if isinstance(layer, tfmot.sparsity.keras.PrunableLayer) or hasattr(layer,
                                                                          "get_prunable_weights"):
        return True
    if type(layer) in prune_registry.PruneRegistry._LAYERS_WEIGHTS_MAP:  # noqa: SLF001
        return bool(prune_registry.PruneRegistry._LAYERS_WEIGHTS_MAP[type(layer)])  # noqa: SLF001
    return True  # RNN layers: kernel and recurrent_kernel


def _m_by_n_input_channels(layer) -> int | None:
    """Input channels of a Dense/Conv2D kernel (the m-by-n axis); None if m-by-n can't apply."""
    if type(layer) not in (keras.layers.Dense, keras.layers.Conv2D):
        return None
    kernel = layer.kernel
    return int(kernel.shape[-2])


def _pruning_policy(params: PruningParams):
    if params.pruning_policy == PruningPolicy.PRUNE_FOR_LATENCY_ON_XNNPACK:
        return tfmot.sparsity.keras.PruneForLatencyOnXNNPack()
    return None


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """The layers (with weights) a technique wraps, and why it leaves each other one alone."""

    wrapped: tuple[str, ...]
    skipped: dict[str, str]


def split_candidates(model, names: tuple[str, ...] | None, technique: str, candidates: list,
                     wraps_weights, verb: str) -> tuple[list, dict[str, str]]:
    """The candidates TFMOT will wrap, and every layer with weights left out with why: not listed
    in `<technique>.layers`, or a layer whose weights TFMOT does not touch (`wraps_weights`)."""
    skipped = {} if names is None else {
        layer.name: f"not listed in {technique}.layers" for layer in model.layers
        if layer.weights and layer.name not in names}
    selected = []
    for layer in candidates:
        if wraps_weights(layer):
            selected.append(layer)
        else:
            skipped[layer.name] = f"TFMOT {verb} no weights of a {type(layer).__name__}"
    return selected, skipped


def plan_pruning(model: keras.Model, params: PruningParams) -> LayerPlan:
    """The layers prune() wraps with prune_low_magnitude and why it skips the others; raises
    (as check_prunable) when pruning is impossible."""
    candidates = supported_candidates(
        model, params.layers, "pruning", _prunable, "PruneRegistry",
        "tfmot.sparsity.keras.PrunableLayer (get_prunable_weights)")
    selected, skipped = split_candidates(model, params.layers, "pruning", candidates,
                                         _prunes_weights, "prunes")

    policy = _pruning_policy(params)
    if policy is not None:
        try:
            policy.ensure_model_supports_pruning(model)
        except ValueError as exc:
            raise UnsupportedModelError(
                f"Model '{model.name}' does not fit the {type(policy).__name__} pruning policy: "
                f"{exc}. That policy prunes 1x1 Conv2D layers of a MobileNet-like model for "
                "XNNPACK's sparse inference; use pruning_policy=null to prune any layer.") from exc
        for layer in selected:
            if not policy.allow_pruning(layer):
                skipped[layer.name] = f"left dense by pruning_policy {params.pruning_policy.value}"
        selected = [layer for layer in selected if layer.name not in skipped]

    if params.sparsity_m_by_n is not None:
        m, n = params.sparsity_m_by_n
        kernels = {layer.name: _m_by_n_input_channels(layer) for layer in selected}
        wrong_type = [name for name, channels in kernels.items() if channels is None]
        misfit = [name for name, channels in kernels.items()
                  if channels is not None and channels % n]
        if params.layers is not None and wrong_type:
            raise UnsupportedLayerError(
                f"sparsity_m_by_n {(m, n)} is supported only for Dense and Conv2D kernels; "
                f"layer(s) {wrong_type} are not. List only Dense/Conv2D layers in `layers`, or "
                "use unstructured pruning (sparsity_m_by_n=null).", wrong_type)
        if params.layers is not None and misfit:
            raise UnsupportedLayerError(
                f"Layer(s) {misfit} have an input-channel count "
                f"({[kernels[name] for name in misfit]}) that is not a multiple of n={n}, so "
                f"their kernels cannot hold {m}:{n} sparsity. Remove them from `layers`.", misfit)
        if wrong_type or misfit:
            logging.warning(
                "Leaving %s dense: %d:%d sparsity needs a Dense/Conv2D kernel whose input "
                "channels are a multiple of %d.", wrong_type + misfit, m, n, n)
        for name in wrong_type:
            skipped[name] = f"{m}:{n} sparsity applies to Dense and Conv2D kernels only"
        for name in misfit:
            skipped[name] = (f"its {kernels[name]} input channels are not a multiple of {n}, "
                             f"so it cannot hold {m}:{n} sparsity")
        selected = [layer for layer in selected if layer.name not in skipped]

    if not selected:
        raise UnsupportedModelError(
            f"No layer of model '{model.name}' can be pruned with these parameters (layers="
            f"{list(params.layers) if params.layers else None}, pruning_policy="
            f"{params.pruning_policy.value if params.pruning_policy else None}, sparsity_m_by_n="
            f"{params.sparsity_m_by_n}). Name layers with Dense/Conv kernels in `layers`.")
    return LayerPlan(tuple(layer.name for layer in selected), skipped)


def _plan(model, params: PruningParams) -> list[str]:
    """Names of the layers to wrap with prune_low_magnitude; raises when that is impossible."""
    return list(plan_pruning(model, params).wrapped)


def check_prunable(model: keras.Model, params: PruningParams) -> None:
    """Raises before any training when `model` cannot be pruned with `params`.

    UnsupportedModelError: subclassed model, or the pruning policy does not fit the model.
    UnsupportedLayerError: a layer to prune is not supported by TFMOT (its `.layers` names them).
    ConfigError: `params.layers` names layers that do not exist or have no weights.
    """
    _plan(model, params)


# ---------------------------------------------------------------------------------------------
# Pruning

def clone_with_weights(model: keras.Model) -> keras.Model:
    """A copy of `model` that shares no layers or variables with it."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def ramp_epochs(training: training_lib.TrainingParams) -> int:
    """Epochs over which the schedule reaches its target when fine-tuning runs until recovered
    (end_step null): the first quarter of max_epochs, at least one. Fine-tuning does not stop
    before they are over; the rest of the epochs let the accuracy recover."""
    return max(1, training.max_epochs // 4)


def _end_step(params: PruningParams, training: training_lib.TrainingParams,
              batches: int) -> int:
    """The last step at which the mask is updated (pruning steps are 1..total steps).

    Fixed epochs: the end of fine-tuning. Until recovered: the end of the ramp epochs."""
    total_steps = training.epoch_budget * batches
    ramp = training.epochs if not training.recovers else ramp_epochs(training)
    end = ramp * batches if params.end_step is None else params.end_step
    if params.end_step is not None and params.end_step > total_steps:
        raise ConfigError(
            f"end_step={params.end_step} is past the {total_steps} steps of fine-tuning, so the "
            f"target sparsity would never be reached. Lower end_step or raise "
            f"{'max_epochs' if training.recovers else 'epochs'}.")
    # Align to the pruning frequency so the schedule's last update happens at the target.
    end = params.begin_step + ((end - params.begin_step) // params.frequency) * params.frequency
    first = params.begin_step if params.begin_step >= 1 else params.frequency
    if first > end or first > total_steps:
        raise ConfigError(
            f"No pruning step falls within the {end} steps of the pruning schedule (begin_step="
            f"{params.begin_step}, frequency={params.frequency}, end_step={params.end_step}). "
            "Lower begin_step or frequency, or raise epochs / max_epochs.")
    return end


def _schedule(params: PruningParams, end_step: int):
    if params.pruning_schedule == PruningSchedule.CONSTANT_SPARSITY:
        return tfmot.sparsity.keras.ConstantSparsity(
            params.target_sparsity, begin_step=params.begin_step, end_step=end_step,
            frequency=params.frequency)
    if end_step == params.begin_step:
        raise ConfigError(
            f"The polynomial_decay schedule needs at least two pruning steps; with "
            f"frequency={params.frequency} fine-tuning has one. Lower frequency or raise epochs.")
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=params.initial_sparsity, final_sparsity=params.target_sparsity,
        begin_step=params.begin_step, end_step=end_step, frequency=params.frequency)


def _kernel_sparsity(layer) -> list[tuple[str, float]]:
    out = []
    for weight in layer.trainable_weights:
        short = weight.name.split("/")[-1].split(":")[0]
        # SeparableConv's depthwise kernel is not pruned by TFMOT (its pointwise kernel is).
        if ("kernel" in short and short != "depthwise_kernel") or short == "embeddings":
            values = weight.numpy()
            out.append((weight.name, float(np.mean(values == 0))))
    return out


def prune(model: keras.Model, train_ds: tf.data.Dataset, params: PruningParams,
          training: training_lib.TrainingParams, verbose: int = 0,
          validation_ds: tf.data.Dataset | None = None) -> keras.Model:
    """Prunes `model` while fine-tuning it on `train_ds`; returns the stripped, pruned model.

    Fine-tuning runs until the accuracy on `validation_ds` recovered (training.epochs None; the
    schedule reaches its target within ramp_epochs and fine-tuning does not stop before), or
    exactly training.epochs epochs (the schedule ends with them). The input model is not
    changed. The result has the same layers and names as the input (no TFMOT wrappers), is not
    compiled, and carries its FineTuning record (training.fine_tuning_of). Raises
    StructureLostError if a pruned kernel ends below the promised sparsity.
    """
    training_lib.seed_step(training)
    to_prune = set(_plan(model, params))
    from_logits = training_lib.resolve_from_logits(model, training)
    training = dataclasses.replace(training, from_logits=from_logits)
    batches = training_lib.count_batches(train_ds)
    end_step = _end_step(params, training, batches)
    schedule = _schedule(params, end_step)
    reference = training_lib.reference_accuracy(model, training, validation_ds)

    def wrap(layer):
        if layer.name in to_prune:
            return tfmot.sparsity.keras.prune_low_magnitude(
                layer, pruning_schedule=schedule, sparsity_m_by_n=params.sparsity_m_by_n)
        return layer

    base = clone_with_weights(model)
    pruned = keras.models.clone_model(base, clone_function=wrap)
    logging.info("Pruning %s of '%s' to %.0f %% sparsity by step %d", sorted(to_prune),
                 model.name, 100 * params.expected_sparsity, end_step)
    record = training_lib.fine_tune(
        pruned, train_ds, training, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        verbose=verbose, validation_ds=validation_ds, reference=reference,
        min_epochs=math.ceil(end_step / batches))
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)

    short = []
    for layer in stripped.layers:
        if layer.name in to_prune:
            for name, sparsity in _kernel_sparsity(layer):
                if sparsity < params.expected_sparsity - SPARSITY_TOLERANCE:
                    short.append(f"{name}: {sparsity:.1%}")
    if short:
        raise StructureLostError(
            f"Pruning did not reach {params.expected_sparsity:.0%} sparsity in {short}. Make the "
            "schedule end within fine-tuning (end_step null) or raise epochs.")
    return training_lib.attach_fine_tuning(stripped, record)


__all__ = ["PruningSchedule", "PruningPolicy", "PruningParams", "LayerPlan", "plan_pruning",
           "check_prunable", "prune", "ramp_epochs",
           "clone_with_weights", "ensure_functional", "resolve_layers"]
