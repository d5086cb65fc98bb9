"""tf.data input: from numpy arrays and from TFRecord files of tf.Example — the one input path."""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterator, Sequence

import numpy as np

from collabopt.components.core.errors import ConfigError, DatasetError
from collabopt.components.core.keras_compat import tf

_DTYPES = {"float32": tf.float32, "int64": tf.int64, "uint8": tf.int64}


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """How to read one tf.Example: a dense numeric feature, reshaped, and an integer label."""

    feature_key: str = "image"
    label_key: str = "label"
    feature_shape: tuple[int, ...] = (8, 8, 1)
    feature_dtype: str = "float32"
    scale: float = 1.0  # features are multiplied by this (e.g. 1/255 for raw pixel bytes)

    def __post_init__(self):
        if not self.feature_key or not self.label_key:
            raise ConfigError("feature_key and label_key must be non-empty strings")
        if not self.feature_shape or any(int(d) <= 0 for d in self.feature_shape):
            raise ConfigError(
                f"feature_shape must be a list of positive integers, got {list(self.feature_shape)}")
        if self.feature_dtype not in ("float32", "int64"):
            raise ConfigError(
                f"feature_dtype must be 'float32' or 'int64', got {self.feature_dtype!r}")
        object.__setattr__(self, "feature_shape", tuple(int(d) for d in self.feature_shape))

    @property
    def num_values(self) -> int:
        return int(np.prod(self.feature_shape))


def dataset_from_arrays(x: np.ndarray, y: np.ndarray, batch_size: int = 32,
                        shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Batches of (features, labels) from numpy arrays."""
    if len(x) == 0:
        raise DatasetError("The dataset is empty: no examples to train or evaluate on.")
    if len(x) != len(y):
        raise DatasetError(f"Features and labels differ in length: {len(x)} vs {len(y)}.")
    ds = tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y.astype(np.int64)))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size)


def tfrecord_files(pattern_or_dir: str | Sequence[str]) -> list[str]:
    """Files matching a glob, or every file in a directory (e.g. an Examples split URI)."""
    patterns = [pattern_or_dir] if isinstance(pattern_or_dir, str) else list(pattern_or_dir)
    files: list[str] = []
    for pattern in patterns:
        if tf.io.gfile.isdir(pattern):
            pattern = os.path.join(pattern, "*")
        files.extend(sorted(tf.io.gfile.glob(pattern)))
    return files


def dataset_from_tfrecords(pattern_or_dir: str | Sequence[str], spec: FeatureSpec,
                           batch_size: int = 32, shuffle: bool = False,
                           seed: int = 0) -> tf.data.Dataset:
    """Batches of (features, labels) parsed from TFRecord files of tf.Example.

    Gzip compression is detected from the `.gz` suffix that TFX ExampleGens write.
    Raises DatasetError when there are no files, no records, or the keys do not match.
    """
    files = tfrecord_files(pattern_or_dir)
    if not files:
        raise DatasetError(
            f"No TFRecord files at {pattern_or_dir!r}. Point the examples path at a directory or "
            "glob of TFRecord files of tf.Example (e.g. an ExampleGen split such as Split-train).")
    compression = "GZIP" if files[0].endswith(".gz") else None
    raw = tf.data.TFRecordDataset(files, compression_type=compression)
    _check_first_record(raw, spec, files[0])

    feature_dtype = _DTYPES[spec.feature_dtype]
    description = {
        spec.feature_key: tf.io.FixedLenFeature([spec.num_values], feature_dtype),
        spec.label_key: tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(record):
        parsed = tf.io.parse_single_example(record, description)
        x = tf.reshape(tf.cast(parsed[spec.feature_key], tf.float32), spec.feature_shape)
        if spec.scale != 1.0:
            x = x * spec.scale
        return x, parsed[spec.label_key]

    ds = raw.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle:
        ds = ds.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _check_first_record(raw: tf.data.Dataset, spec: FeatureSpec, path: str) -> None:
    first = next(iter(raw.take(1)), None)
    if first is None:
        raise DatasetError(
            f"The TFRecord files starting with {path!r} hold no examples. An empty split cannot be "
            "used for training or evaluation: check the ExampleGen output or the split names.")
    example = tf.train.Example.FromString(first.numpy())
    features = example.features.feature
    for key in (spec.feature_key, spec.label_key):
        if key not in features:
            raise DatasetError(
                f"Feature {key!r} is not in the examples at {path!r}; they hold "
                f"{sorted(features.keys())}. Set feature_key / label_key to one of those.")
    feature = features[spec.feature_key]
    count = len(feature.float_list.value) or len(feature.int64_list.value)
    if count != spec.num_values:
        raise DatasetError(
            f"Feature {spec.feature_key!r} has {count} values per example but feature_shape "
            f"{list(spec.feature_shape)} needs {spec.num_values}. Fix feature_shape.")
    if feature.int64_list.value and spec.feature_dtype != "int64":
        raise DatasetError(
            f"Feature {spec.feature_key!r} is stored as int64; set feature_dtype: int64.")


def representative_dataset(ds: tf.data.Dataset,
                           num_samples: int = 200) -> Callable[[], Iterator[list[np.ndarray]]]:
    """A TFLite calibration generator yielding single real samples from a batched dataset."""

    def generate():
        seen = 0
        for x, _ in ds:
            for sample in x.numpy():
                yield [sample[None, ...].astype(np.float32)]
                seen += 1
                if seen >= num_samples:
                    return

    return generate


def count_examples(ds: tf.data.Dataset) -> int:
    return int(sum(int(tf.shape(x)[0]) for x, _ in ds))


def write_examples(path: str, x: np.ndarray, y: np.ndarray, spec: FeatureSpec) -> str:
    """Writes (x, y) as uncompressed TFRecords of tf.Example; used by the demo and the tests."""
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    with tf.io.TFRecordWriter(path) as writer:
        for features, label in zip(x, y):
            flat = np.asarray(features).reshape(-1)
            if spec.feature_dtype == "int64":
                feat = tf.train.Feature(int64_list=tf.train.Int64List(value=flat.astype(np.int64)))
            else:
                feat = tf.train.Feature(float_list=tf.train.FloatList(value=flat.astype(np.float32)))
            example = tf.train.Example(features=tf.train.Features(feature={
                spec.feature_key: feat,
                spec.label_key: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
            }))
            writer.write(example.SerializeToString())
    return path


__all__ = ["FeatureSpec", "dataset_from_arrays", "dataset_from_tfrecords", "representative_dataset",
           "write_examples", "count_examples", "tfrecord_files"]
