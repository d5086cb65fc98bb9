"""Executor plumbing shared by the six components: models, examples and properties of artifacts.

- Models: a `Model` artifact holds either a TFX Trainer's layout (`<uri>/Format-Serving/`, found
  with `tfx.utils.path_utils`) or a model saved by tf_keras directly in `<uri>` (a SavedModel
  directory, or one `.keras` / `.h5` file). Our steps always write `<uri>/Format-Serving/` with
  `core.qat.save_model`, so a standard Pusher or Evaluator finds them where it finds a Trainer's.
- Examples: the `train` and `eval` splits of an `Examples` artifact as tf.data, through
  `core.data` (the one input path).
- Properties: typed custom properties, through `collabopt.components.properties`.
- Technique path: the input's `technique_path` extended by this step. An input without one (from a
  Trainer or an Importer) or with `base` is the base model: its first step *replaces* `base`, so a
  base model pruned, then clustered, then PCQAT-trained is `prune>cluster>pcqat`, and `base`
  means "no optimization" (its PTQ `.tflite` is the baseline leaf).

Paths are joined with `os.path.join` and read / written through `tfx.dsl.io.fileio`, so `gs://`
or `s3://` artifact URIs work.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

from absl import logging
from tfx.dsl.io import fileio
from tfx.types import artifact as tfx_artifact
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import path_utils

from collabopt.components import params, properties, types
from collabopt.components.core.errors import DatasetError, ModelLoadError

BASE_TECHNIQUE = "base"
TECHNIQUE_SEPARATOR = ">"
_KERAS_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")


# --- models ------------------------------------------------------------------------------------

def model_path(model: tfx_artifact.Artifact) -> str:
    """Where the Keras model of a `Model` artifact is: Format-Serving/ if present, else the URI."""
    is_old = (model.type_name == standard_artifacts.Model.TYPE_NAME
              and path_utils.is_old_model_artifact(model))
    serving = path_utils.serving_model_path(model.uri, is_old)
    if fileio.exists(serving):
        return serving
    if fileio.exists(os.path.join(model.uri, "saved_model.pb")):
        return model.uri
    if fileio.isdir(model.uri):
        files = [f for f in fileio.listdir(model.uri) if f.endswith(_KERAS_FILE_SUFFIXES)]
        if len(files) == 1:
            return os.path.join(model.uri, files[0])
    raise ModelLoadError(
        f"No Keras model in the Model artifact at {model.uri!r}: expected a TFX Trainer's "
        f"{os.path.basename(path_utils.serving_model_dir(model.uri))}/ directory, a SavedModel "
        "(saved_model.pb) or one .keras / .h5 file. Point the Importer's source_uri at the "
        "directory `model.save(...)` wrote, or use a Trainer's `model` output.")


def load_model(model: tfx_artifact.Artifact):
    """The Keras model in a `Model` artifact (plain, or QAT / PQAT / CQAT / PCQAT)."""
    from collabopt.components.core import qat

    path = model_path(model)
    logging.info("Loading the Keras model at %s", path)
    return qat.load_model(path)


def save_model(keras_model, model: tfx_artifact.Artifact) -> str:
    """Saves to `<uri>/Format-Serving/` (a Trainer's layout) with core.qat.save_model."""
    from collabopt.components.core import qat

    path = path_utils.serving_model_dir(model.uri)
    qat.save_model(keras_model, path)
    logging.info("Saved the Keras model to %s", path)
    return path


def model_input_shape(keras_model) -> tuple[int, ...] | None:
    """The model's input shape without the batch dimension (None for several inputs)."""
    shape = keras_model.input_shape
    if isinstance(shape, list):
        return None if len(shape) != 1 else tuple(shape[0][1:])
    return tuple(shape[1:])


# --- tflite ------------------------------------------------------------------------------------

def read_bytes(uri: str, file_name: str) -> bytes:
    path = os.path.join(uri, file_name)
    if not fileio.exists(path):
        raise ModelLoadError(f"{path!r} does not exist: the artifact at {uri!r} holds no "
                             f"{file_name}. Was it written by this project's components?")
    with fileio.open(path, "rb") as f:
        return f.read()


def write_bytes(uri: str, file_name: str, data: bytes) -> str:
    fileio.makedirs(uri)
    path = os.path.join(uri, file_name)
    with fileio.open(path, "wb") as f:
        f.write(data)
    logging.info("Wrote %d bytes to %s", len(data), path)
    return path


def rename_file(src: str, uri: str, file_name: str) -> str:
    """Moves `src` to `<uri>/<file_name>` (no-op when it is already there)."""
    dst = os.path.join(uri, file_name)
    if src != dst:
        fileio.rename(src, dst, overwrite=True)
        logging.info("Renamed %s to %s", src, dst)
    return dst


def tflite_input_shape(tflite_bytes: bytes) -> tuple[int, ...] | None:
    """The `.tflite` model's first input shape without the batch dimension."""
    from collabopt.components.core.keras_compat import tf

    details = tf.lite.Interpreter(model_content=tflite_bytes).get_input_details()
    if len(details) != 1:
        return None
    return tuple(int(d) for d in details[0]["shape"][1:])


# --- examples ----------------------------------------------------------------------------------

def _split_uri(examples: list[tfx_artifact.Artifact], split: str) -> str:
    try:
        return artifact_utils.get_split_uri(examples, split)
    except ValueError as exc:
        names = examples[0].split_names if len(examples) == 1 else "?"
        raise DatasetError(
            f"The Examples artifact has no {split!r} split (it has {names}). Configure the "
            f"ExampleGen with '{params.TRAIN_SPLIT}' and '{params.EVAL_SPLIT}' splits.") from exc


def split_dataset(examples: Iterable[tfx_artifact.Artifact], split: str,
                  props: Mapping[str, Any], input_shape: Iterable[int] | None = None,
                  shuffle: bool = False):
    """One split of an `Examples` artifact as batches of (features, labels)."""
    from collabopt.components.core import data

    uri = _split_uri(list(examples), split)
    spec = params.feature_spec(props, input_shape)
    logging.info("Reading split %s from %s", split, uri)
    return data.dataset_from_tfrecords(uri, spec, batch_size=params.batch_size(props),
                                       shuffle=shuffle)


def train_and_eval(examples: Iterable[tfx_artifact.Artifact], props: Mapping[str, Any],
                   input_shape: Iterable[int] | None = None):
    """(train, eval) datasets: train shuffled, eval in order."""
    examples = list(examples)
    return (split_dataset(examples, params.TRAIN_SPLIT, props, input_shape, shuffle=True),
            split_dataset(examples, params.EVAL_SPLIT, props, input_shape))


def fine_tuning_data(examples: Iterable[tfx_artifact.Artifact], props: Mapping[str, Any],
                     input_shape: Iterable[int] | None = None):
    """(train, validation, eval) datasets of a Keras step. Fine-tuning until recovered holds out
    `validation_fraction` of the train split (core.data.split_validation); with a fixed `epochs`
    validation is None and the whole train split is trained on."""
    from collabopt.components.core import data

    examples = list(examples)
    training = params.training_params(props)
    eval_ds = split_dataset(examples, params.EVAL_SPLIT, props, input_shape)
    if not training.recovers:
        return (split_dataset(examples, params.TRAIN_SPLIT, props, input_shape, shuffle=True),
                None, eval_ds)
    uri = _split_uri(examples, params.TRAIN_SPLIT)
    logging.info("Reading split %s from %s, holding out %.0f %% for validation",
                 params.TRAIN_SPLIT, uri, 100 * training.validation_fraction)
    train, validation = data.train_and_validation_from_tfrecords(
        uri, params.feature_spec(props, input_shape), training.validation_fraction,
        batch_size=params.batch_size(props))
    return train, validation, eval_ds


# --- properties --------------------------------------------------------------------------------

set_properties = properties.set_properties


def get_property(source: tfx_artifact.Artifact | None, key: str, default: Any = None) -> Any:
    """A custom property's value, or `default` when the artifact (or the property) is absent."""
    return default if source is None else properties.get_property(source, key, default)


def structure_properties(structure) -> dict[str, Any]:
    """The measured-structure properties of a core.metrics.WeightStructure."""
    if not structure.kernels:
        return {}
    return {
        types.SPARSITY: float(structure.sparsity),
        types.MIN_KERNEL_SPARSITY: float(structure.min_kernel_sparsity),
        types.MAX_UNIQUE_PER_KERNEL: int(structure.max_unique_per_kernel),
        types.MAX_UNIQUE_PER_CHANNEL: int(structure.max_unique_per_channel),
    }


def fine_tuning_properties(record) -> dict[str, Any]:
    """The properties of a core.training.FineTuning record (accuracies only when measured)."""
    if record is None:
        return {}
    out = {types.EPOCHS_TRAINED: int(record.epochs_trained),
           types.STOP_REASON: record.stop_reason.value}
    if record.validation_accuracy is not None:
        out[types.VALIDATION_ACCURACY] = float(record.validation_accuracy)
    if record.reference_accuracy is not None:
        out[types.REFERENCE_ACCURACY] = float(record.reference_accuracy)
    return out


def technique_path(source: tfx_artifact.Artifact, step: str | None = None) -> str:
    """The input's technique path, extended by `step` (which replaces a bare `base`)."""
    path = get_property(source, types.TECHNIQUE_PATH) or BASE_TECHNIQUE
    if not step:
        return path
    if path == BASE_TECHNIQUE:
        return step
    return f"{path}{TECHNIQUE_SEPARATOR}{step}"


def single(input_dict: Mapping[str, list], key: str) -> tfx_artifact.Artifact:
    return artifact_utils.get_single_instance(list(input_dict[key]))


def optional_single(input_dict: Mapping[str, list], key: str) -> tfx_artifact.Artifact | None:
    artifacts = list(input_dict.get(key) or [])
    return artifact_utils.get_single_instance(artifacts) if artifacts else None


__all__ = [
    "BASE_TECHNIQUE", "model_path", "load_model", "save_model", "model_input_shape", "read_bytes",
    "write_bytes", "rename_file", "tflite_input_shape", "split_dataset",
    "train_and_eval", "fine_tuning_data", "fine_tuning_properties", "set_properties", "get_property", "structure_properties",
    "technique_path", "single", "optional_single",
]
