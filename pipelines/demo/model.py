"""The reference CNN for the digits demo: small, NPU-friendly (Conv2D, MaxPool, Dense only)."""
from __future__ import annotations

from collabopt.components.core.keras_compat import keras, tf
from collabopt.pipelines.demo.data import NUM_CLASSES


def build_digits_cnn(input_shape=(8, 8, 1), num_classes: int = NUM_CLASSES) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="dense1")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def compile_for_training(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def train_digits_cnn(train_ds: tf.data.Dataset, eval_ds: tf.data.Dataset | None = None,
                     epochs: int = 15, seed: int = 0, verbose: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = compile_for_training(build_digits_cnn(tuple(train_ds.element_spec[0].shape[1:])))
    model.fit(train_ds, validation_data=eval_ds, epochs=epochs, verbose=verbose)
    return model
