"""Fine-tuning shared by every technique: compile, fit for a few epochs, measure accuracy.

Pruning, clustering and QAT all start from a trained model and fine-tune it briefly with a small
learning rate (the TFMOT guides use 1e-5 .. 1e-4 and one to a few epochs). Labels are sparse
integer class ids; the loss is sparse categorical cross-entropy on logits or on probabilities.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from collabopt.components.core.errors import ConfigError, DatasetError
from collabopt.components.core.keras_compat import keras, tf


@dataclasses.dataclass(frozen=True)
class TrainingParams:
    """How a technique fine-tunes the model.

    epochs: full passes over the training data (>= 1).
    learning_rate: Adam learning rate, in (0, 1].
    from_logits: whether the model outputs logits. None (default) decides from the model: False
        when the last layer ends in a softmax, True otherwise.
    """

    epochs: int = 2
    learning_rate: float = 1e-4
    from_logits: bool | None = None

    def __post_init__(self):
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, (int, np.integer)) \
                or self.epochs < 1:
            raise ConfigError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        object.__setattr__(self, "epochs", int(self.epochs))
        try:
            lr = float(self.learning_rate)
        except (TypeError, ValueError):
            raise ConfigError(
                f"learning_rate must be a number in (0, 1], got {self.learning_rate!r}") from None
        if not math.isfinite(lr) or not 0.0 < lr <= 1.0:
            raise ConfigError(f"learning_rate must be in range (0, 1], got {self.learning_rate!r}")
        object.__setattr__(self, "learning_rate", lr)
        if self.from_logits is not None and not isinstance(self.from_logits, bool):
            raise ConfigError(
                f"from_logits must be true, false or null (auto), got {self.from_logits!r}")


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
            "from the input dataset: fine-tuning runs `epochs` full passes over it.")
    if cardinality == tf.data.UNKNOWN_CARDINALITY:
        cardinality = int(ds.reduce(np.int64(0), lambda count, _: count + 1))
    if cardinality == 0:
        raise DatasetError("The training dataset is empty: there is nothing to fine-tune on.")
    return cardinality


def fine_tune(model: keras.Model, train_ds: tf.data.Dataset, params: TrainingParams,
              callbacks: Sequence[keras.callbacks.Callback] = (),
              verbose: int = 0) -> keras.callbacks.History:
    """Compiles `model` for fine-tuning and fits it for `params.epochs` epochs on `train_ds`."""
    compile_for_fine_tuning(model, params)
    return model.fit(train_ds, epochs=params.epochs, callbacks=list(callbacks), verbose=verbose)


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


__all__ = ["TrainingParams", "compile_for_fine_tuning", "fine_tune", "keras_accuracy",
           "count_batches", "outputs_probabilities", "resolve_from_logits"]
