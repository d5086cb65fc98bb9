"""Fine-tuning shared by every technique: compile, fit until the accuracy has recovered, measure.

Pruning, clustering and QAT all start from a trained model and fine-tune it with a small
learning rate. How long:

* Recovery (the default, `epochs=None`): fit until the model's accuracy on a validation slice
  of the *train* split (never the eval split that selection uses) is back within
  `recovery_tolerance` of the reference, or until its validation loss has not improved for
  `patience` epochs, or for at most `max_epochs` epochs. The reference is the incoming model's
  accuracy on that slice (measured before TFMOT wraps the model), raised to `reference_floor`
  when one is given: the chain's base model's accuracy on the same slice, so that each step of
  prune -> cluster -> QAT aims back at the model the accuracy budget is measured from and the
  steps' losses do not add up. Keras callbacks do the stopping: `RecoveryStop` (below) and
  EarlyStopping on `val_loss`, which restores the best epoch's weights. Patience watches the
  loss, not the accuracy: on a slice of a few hundred examples the accuracy moves in steps of
  1/n and stalls for epochs while the loss (and, later, the accuracy) still improves. A technique
  can forbid stopping before `min_epochs` (pruning: until its schedule reached the target
  sparsity).
* Fixed (`epochs=N`): exactly N epochs on the whole train split, no validation, no early stop.

Each run returns a `FineTuning` record (epochs trained, validation accuracy reached, reference,
why it stopped); the techniques attach it to the model they return (`fine_tuning_of`). Labels
are sparse integer class ids; the loss is sparse categorical cross-entropy on logits or on
probabilities.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import math
from typing import Sequence

import numpy as np

from collabopt.components.core.errors import ConfigError, DatasetError
from collabopt.components.core.keras_compat import keras, tf

# The attribute of a returned model that holds its FineTuning record (as Keras' `model.history`).
_FINE_TUNING_ATTR = "collabopt_fine_tuning"


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _number(name: str, value, low: float, high: float, low_open: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number > high or \
            (number <= low if low_open else number < low):
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name} must be a number in range {bracket}{low:g}, {high:g}], "
                          f"got {value!r}")
    return number


@dataclasses.dataclass(frozen=True)
class TrainingParams:
    """How a technique fine-tunes the model.

    epochs: None (default) fine-tunes until recovered (see the module docstring); an integer
        >= 1 trains exactly that many epochs on the whole train split.
    max_epochs: the cap on recovery fine-tuning (>= 1).
    patience: recovery stops after this many epochs without a lower validation loss (>= 1).
    recovery_tolerance: how far below its reference the validation accuracy may stay and count
        as recovered, in [0, 1] (0.005: half a point).
    reference_floor: None, or the least reference recovery aims at, in [0, 1]: the chain's base
        model's accuracy on the same validation slice (the pipeline passes the incoming model's
        recorded reference). Not a config key.
    validation_fraction: the share of the train split held out to measure recovery, in
        (0, 0.5] (every 1/fraction-th example, before shuffling).
    learning_rate: Adam learning rate, in (0, 1]. 3e-4 (was 1e-4 with a fixed 2 epochs):
        measured by benchmarks/fine_tuning.py, it recovers a DS-CNN pruned to 75 % (0.70 after
        2 epochs at 1e-4, 0.87 until recovered at 1e-4, 0.92 at 3e-4) and gave the best
        prune -> cluster -> PCQAT leaves on DS-CNN and the digits CNN.
    from_logits: whether the model outputs logits. None (default) decides from the model: False
        when the last layer ends in a softmax, True otherwise.
    seed: seeds Python, NumPy and TensorFlow when a technique starts (`seed_step`), so the
        same model, data and parameters give the same result; None leaves them unseeded.
    """

    epochs: int | None = None
    max_epochs: int = 8
    patience: int = 2
    recovery_tolerance: float = 0.005
    validation_fraction: float = 0.1
    learning_rate: float = 3e-4
    from_logits: bool | None = None
    seed: int | None = 0
    reference_floor: float | None = None

    def __post_init__(self):
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise ConfigError(f"seed must be null or an integer >= 0, got {self.seed!r}")
        if self.epochs is not None and (not _is_int(self.epochs) or self.epochs < 1):
            raise ConfigError(
                f"epochs must be null (fine-tune until recovered) or an integer >= 1, got "
                f"{self.epochs!r}")
        for field in ("max_epochs", "patience"):
            value = getattr(self, field)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{field} must be an integer >= 1, got {value!r}")
            object.__setattr__(self, field, int(value))
        if self.epochs is not None:
            object.__setattr__(self, "epochs", int(self.epochs))
        object.__setattr__(self, "recovery_tolerance",
                           _number("recovery_tolerance", self.recovery_tolerance, 0.0, 1.0))
        object.__setattr__(self, "validation_fraction",
                           _number("validation_fraction", self.validation_fraction, 0.0, 0.5,
                                   low_open=True))
        object.__setattr__(self, "learning_rate",
                           _number("learning_rate", self.learning_rate, 0.0, 1.0, low_open=True))
        if self.reference_floor is not None:
            object.__setattr__(self, "reference_floor",
                               _number("reference_floor", self.reference_floor, 0.0, 1.0))
        if self.from_logits is not None and not isinstance(self.from_logits, bool):
            raise ConfigError(
                f"from_logits must be true, false or null (auto), got {self.from_logits!r}")

    @property
    def recovers(self) -> bool:
        """True when fine-tuning runs until recovered (needs a validation slice)."""
        return self.epochs is None

    @property
    def epoch_budget(self) -> int:
        """The most epochs fine-tuning can take."""
        return self.max_epochs if self.epochs is None else self.epochs


class StopReason(str, enum.Enum):
    FIXED_EPOCHS = "fixed_epochs"      # `epochs` was set: trained exactly that many
    RECOVERED = "recovered"            # validation accuracy back within the tolerance
    NO_IMPROVEMENT = "no_improvement"  # `patience` epochs without a lower validation loss
    MAX_EPOCHS = "max_epochs"          # the cap was reached before either


@dataclasses.dataclass(frozen=True)
class FineTuning:
    """What one fine-tuning run did. The accuracies are on the validation slice of the train
    split (None in fixed-epochs mode, which uses no validation slice)."""

    epochs_trained: int
    stop_reason: StopReason
    validation_accuracy: float | None = None
    reference_accuracy: float | None = None
    losses: tuple[float, ...] = ()


class RecoveryStop(keras.callbacks.Callback):
    """Stops training at the end of the first epoch (from `min_epochs` on) whose validation
    accuracy is at least `target`."""

    def __init__(self, target: float, min_epochs: int = 1, monitor: str = "val_accuracy"):
        super().__init__()
        self.target, self.min_epochs, self.monitor = target, min_epochs, monitor
        self.recovered_epoch: int | None = None

    def on_train_begin(self, logs=None):
        self.recovered_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and epoch + 1 >= self.min_epochs and value >= self.target:
            self.recovered_epoch = epoch
            self.model.stop_training = True


def _innermost(layer):
    """The Keras layer inside any TFMOT wrappers (prune, cluster, quantize)."""
    while hasattr(layer, "layer") and isinstance(layer.layer, keras.layers.Layer):
        layer = layer.layer
    return layer


def outputs_probabilities(model: keras.Model) -> bool:
    """True when the model's last layer ends in a softmax (so its outputs are not logits)."""
    last = _innermost(model.layers[-1])
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    # QAT replaces a layer's activation by a QuantizeAwareActivation that holds the original.
    activation = getattr(activation, "activation", activation)
    if isinstance(activation, str):
        return activation == "softmax"
    return getattr(activation, "__name__", "") == "softmax"


def resolve_from_logits(model: keras.Model, params: TrainingParams) -> bool:
    if params.from_logits is not None:
        return params.from_logits
    return not outputs_probabilities(model)


def compile_for_fine_tuning(model: keras.Model, params: TrainingParams) -> keras.Model:
    """Compiles `model` in place (Adam, sparse categorical cross-entropy, accuracy); returns it."""
    model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=resolve_from_logits(model, params)),
        metrics=["accuracy"],
    )
    return model


def count_batches(ds: tf.data.Dataset) -> int:
    """Batches in one pass over `ds` (iterates when the cardinality is unknown)."""
    cardinality = int(ds.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise DatasetError(
            "The training dataset repeats forever, so an epoch has no end. Remove `.repeat()` "
            "from the input dataset: fine-tuning runs full passes over it.")
    if cardinality == tf.data.UNKNOWN_CARDINALITY:
        cardinality = int(ds.reduce(np.int64(0), lambda count, _: count + 1))
    if cardinality == 0:
        raise DatasetError("The training dataset is empty: there is nothing to fine-tune on.")
    return cardinality


def reference_accuracy(model: keras.Model, params: TrainingParams,
                       validation_ds: tf.data.Dataset | None) -> float | None:
    """What recovery fine-tuning aims back at: the incoming model's accuracy on the validation
    slice, or `params.reference_floor` when that is higher (None in fixed-epochs mode). Raises
    ConfigError when recovery has no slice."""
    if not params.recovers:
        return None
    if validation_ds is None:
        raise ConfigError(
            "Fine-tuning until recovered (epochs null) needs a validation slice of the train "
            "split: pass validation_ds (collabopt.components.core.data."
            "train_and_validation_from_tfrecords / _from_arrays), or set a fixed `epochs`.")
    measured = keras_accuracy(model, validation_ds)
    if params.reference_floor is None:
        return measured
    return max(measured, params.reference_floor)


def aiming_at_least(params: TrainingParams, reference: float | None) -> TrainingParams:
    """`params` with `reference` as its reference floor: a step after one that recorded what it
    recovered to (the chain's base model's accuracy) aims at least as high. Unchanged when there
    is no reference, or with fixed epochs (which measure no recovery)."""
    if reference is None or not params.recovers:
        return params
    return dataclasses.replace(params, reference_floor=float(reference))


def seed_step(params: TrainingParams) -> None:
    """Seeds Python, NumPy and TensorFlow for one technique (wrapping, centroid initialization,
    shuffling, fine-tuning) when `params.seed` is set."""
    if params.seed is not None:
        keras.utils.set_random_seed(int(params.seed))


def fine_tune(model: keras.Model, train_ds: tf.data.Dataset, params: TrainingParams,
              callbacks: Sequence[keras.callbacks.Callback] = (), verbose: int = 0,
              validation_ds: tf.data.Dataset | None = None,
              reference: float | None = None, min_epochs: int = 1) -> FineTuning:
    """Compiles `model` and fits it on `train_ds`; returns what it did.

    Fixed `params.epochs`: exactly that many epochs, `validation_ds` unused. Otherwise until
    the accuracy on `validation_ds` is at least `reference - params.recovery_tolerance`, or
    EarlyStopping on the validation loss (patience, best weights restored) or
    `params.max_epochs` ends it; neither stop happens before `min_epochs`. `reference` defaults
    to `reference_accuracy(model, ...)` now — pass that of the model before it was wrapped.
    """
    compile_for_fine_tuning(model, params)
    if not params.recovers:
        history = model.fit(train_ds, epochs=params.epochs, callbacks=list(callbacks),
                            verbose=verbose)
        return FineTuning(params.epochs, StopReason.FIXED_EPOCHS,
                          losses=tuple(float(v) for v in history.history.get("loss", ())))
    if reference is None:
        reference = reference_accuracy(model, params, validation_ds)
    elif validation_ds is None:
        reference_accuracy(model, params, None)  # raises: recovery needs the slice
    min_epochs = max(1, min(int(min_epochs), params.max_epochs))
    recovery = RecoveryStop(reference - params.recovery_tolerance, min_epochs)
    # start_from_epoch counts epochs before the first one EarlyStopping judges (0-based).
    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=params.patience,
                                          restore_best_weights=True,
                                          start_from_epoch=min_epochs - 1)
    history = model.fit(train_ds, validation_data=validation_ds, epochs=params.max_epochs,
                        callbacks=[*callbacks, recovery, early], verbose=verbose)
    epochs = len(history.history.get("loss", ()))
    if recovery.recovered_epoch is not None:
        reason = StopReason.RECOVERED
    elif early.stopped_epoch > 0:
        reason = StopReason.NO_IMPROVEMENT
    else:
        reason = StopReason.MAX_EPOCHS
    result = FineTuning(epochs, reason, keras_accuracy(model, validation_ds), float(reference),
                        tuple(float(v) for v in history.history.get("loss", ())))
    logging.info("Fine-tuned '%s' for %d epoch(s): validation accuracy %.4f (reference %.4f), "
                 "stopped: %s", model.name, epochs, result.validation_accuracy, reference,
                 reason.value)
    return result


def attach_fine_tuning(model: keras.Model, record: FineTuning) -> keras.Model:
    """Records on the model a technique returns how its fine-tuning went; returns the model."""
    setattr(model, _FINE_TUNING_ATTR, record)
    return model


def fine_tuning_of(model: keras.Model) -> FineTuning | None:
    """The FineTuning record of a model returned by prune / cluster / quantize_aware_train (None
    for any other model, e.g. one loaded from disk)."""
    return getattr(model, _FINE_TUNING_ATTR, None)


def keras_accuracy(model: keras.Model, ds: tf.data.Dataset) -> float:
    """Top-1 accuracy of `model` on the (features, labels) batches of `ds` (logits or probs)."""
    correct = 0
    total = 0
    for x, y in ds:
        predictions = model(x, training=False)
        correct += int(np.sum(np.argmax(np.asarray(predictions), axis=-1)
                              == np.asarray(y).reshape(-1)))
        total += int(np.asarray(y).shape[0])
    if total == 0:
        raise DatasetError("The evaluation dataset is empty: accuracy is undefined.")
    return correct / total


__all__ = ["TrainingParams", "StopReason", "FineTuning", "RecoveryStop", "compile_for_fine_tuning",
           "fine_tune", "reference_accuracy", "aiming_at_least", "attach_fine_tuning",
           "fine_tuning_of", "keras_accuracy", "count_batches", "outputs_probabilities", "resolve_from_logits"]
