"""Small models and constants shared by the core technique tests."""
from __future__ import annotations

from collabopt.components.core.keras_compat import keras
from collabopt.components.core.training import TrainingParams

ONE_EPOCH = TrainingParams(epochs=1, learning_rate=1e-4)
KERNEL_LAYERS = ("conv1", "conv2", "conv3", "dense1", "logits")  # of the digits CNN


class _Scale(keras.layers.Layer):
    """A custom layer with a weight that TFMOT knows nothing about."""

    def build(self, input_shape):
        self.scale = self.add_weight("scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.scale


class _Subclassed(keras.Model):
    """A subclassed model: TFMOT wraps only Sequential and Functional ones."""

    def __init__(self):
        super().__init__()
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(10)

    def call(self, inputs):
        return self.dense(self.flatten(inputs))
