"""The zoo's workloads (a model and the data it learns), trained quickly and saved for a pipeline.

    from collabopt.pipelines import zoo
    trained = zoo.train("ds_cnn")                      # TrainedModel: model, accuracy, seconds
    workload = zoo.write_workload("cnn_1d", "work/")   # work/data/{train,eval}/, work/model/
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import numpy as np

from collabopt.components.core.keras_compat import keras
from collabopt.pipelines.zoo import data, models


@dataclasses.dataclass(frozen=True)
class Workload:
    """A zoo network and its data. `epochs` / `learning_rate` train it past 0.85 eval accuracy
    in under a minute on 2 cores (benchmarks/zoo.py measures both)."""

    name: str
    build: Callable[..., keras.Model]
    arrays: Callable[[int], data.Arrays]   # seed -> (train, eval) arrays
    epochs: int
    learning_rate: float = 1e-3
    batch_size: int = 32
    description: str = ""

    def load(self, seed: int = 0) -> data.Arrays:
        return self.arrays(seed)


ZOO: dict[str, Workload] = {w.name: w for w in (
    Workload("ds_cnn", models.ds_cnn, lambda seed: data.kws_features(seed=seed), epochs=10,
             description="DS-CNN (depthwise-separable convs + BatchNorm) on synthetic 49x10 "
                         "keyword-spotting features"),
    Workload("mobilenet_v1", models.mobilenet_v1,
             lambda seed: data.digits_images(size=32, channels=3, seed=seed), epochs=10,
             learning_rate=2e-3,
             description="MobileNetV1 alpha 0.25 on digits resized to 32x32x3"),
    Workload("cnn_1d", models.cnn_1d, lambda seed: data.signals_1d(seed=seed), epochs=10,
             description="1-D CNN (Conv1D, MaxPooling1D, Flatten, Dense) on synthetic signals"),
    Workload("resnet", models.resnet, lambda seed: data.digits_images(seed=seed), epochs=10,
             description="small residual network (Add) on 8x8 digits"),
    Workload("mlp", models.mlp, lambda seed: data.digits_images(flat=True, seed=seed),
             epochs=15, description="MLP (Dense 64-32-10) on flat 64-value digits"),
)}


def workload(name: str) -> Workload:
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"No zoo workload {name!r}; the zoo has {sorted(ZOO)}.") from None


@dataclasses.dataclass
class TrainedModel:
    name: str
    model: keras.Model
    accuracy: float          # on the eval split
    seconds: float           # wall time of fit()
    arrays: data.Arrays

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.arrays[0][0].shape[1:])


def train(name: str, seed: int = 0, epochs: int | None = None, verbose: int = 0,
          arrays: data.Arrays | None = None) -> TrainedModel:
    """Builds and trains zoo workload `name` on its data (or on `arrays`), deterministically in
    `seed`; returns the model with its eval accuracy and training time."""
    from collabopt.components.core.data import dataset_from_arrays
    from collabopt.components.core.training import keras_accuracy, outputs_probabilities

    spec = workload(name)
    arrays = arrays if arrays is not None else spec.load(seed)
    (x_train, y_train), (x_eval, y_eval) = arrays
    keras.utils.set_random_seed(seed)
    model = spec.build(input_shape=tuple(x_train.shape[1:]),
                       num_classes=int(max(y_train.max(), y_eval.max()) + 1))
    model.compile(optimizer=keras.optimizers.Adam(spec.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=not outputs_probabilities(model)),
                  metrics=["accuracy"])
    train_ds = dataset_from_arrays(x_train, y_train, spec.batch_size, shuffle=True, seed=seed)
    start = time.perf_counter()
    model.fit(train_ds, epochs=epochs or spec.epochs, verbose=verbose)
    seconds = time.perf_counter() - start
    accuracy = keras_accuracy(model, dataset_from_arrays(x_eval, y_eval, batch_size=256))
    return TrainedModel(name, model, accuracy, seconds, arrays)


@dataclasses.dataclass(frozen=True)
class WrittenWorkload:
    """What `write_workload` wrote: a pipeline config's `data` and `base_model.path`."""

    name: str
    data_dir: str              # holds train/ and eval/
    model_path: str            # a tf_keras SavedModel directory
    feature_key: str
    label_key: str
    feature_shape: tuple[int, ...]
    accuracy: float
    seconds: float

    def data_config(self) -> dict:
        return {"examples": self.data_dir, "feature_key": self.feature_key,
                "label_key": self.label_key, "feature_shape": list(self.feature_shape)}


def write_workload(name: str, out_dir: str, feature_key: str = "image", label_key: str = "label",
                   seed: int = 0, epochs: int | None = None) -> WrittenWorkload:
    """Trains workload `name` and writes its data as tf.Example TFRecords (`out_dir/data/train/`,
    `out_dir/data/eval/`) and the trained model as a tf_keras SavedModel (`out_dir/model`)."""
    from collabopt.components.core.qat import save_model

    trained = train(name, seed=seed, epochs=epochs)
    data_dir = os.path.join(out_dir, "data")
    data.write_splits(data_dir, trained.arrays, feature_key, label_key, name=name)
    model_path = os.path.join(out_dir, "model")
    save_model(trained.model, model_path)
    return WrittenWorkload(name, data_dir, model_path, feature_key, label_key,
                           trained.feature_shape, trained.accuracy, trained.seconds)


def parameter_count(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights))


__all__ = ["Workload", "ZOO", "workload", "TrainedModel", "train", "WrittenWorkload",
           "write_workload", "parameter_count"]
