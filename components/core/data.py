"""tf.data input: from numpy arrays and from TFRecord files of tf.Example — the one input path."""
from __future__ import annotations

import dataclasses
import gzip
import os
import re
import zlib
from typing import Callable, Iterator, Sequence

import numpy as np

from collabopt.components.core.errors import ConfigError, DatasetError
from collabopt.components.core.keras_compat import tf

_DTYPES = {"float32": tf.float32, "int64": tf.int64, "uint8": tf.int64}

# TFX's ExampleGens reshuffle records as they write a split (write_split.py: beam Reshuffle), so
# the same data comes back in another order on every fresh run. Splits up to this size are read
# in a canonical order (sorted by each example's deterministic serialization: a tf.Example's
# feature map may serialize in any order) so that shuffling with a seed, the validation slice
# and the calibration samples do not depend on it: same data, same models.
CANONICAL_ORDER_MAX_BYTES = 256 * 1024 * 1024


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
    return _batched(_examples_from_arrays(x, y), batch_size, shuffle, seed, buffer=len(x))


def train_and_validation_from_arrays(x: np.ndarray, y: np.ndarray, validation_fraction: float,
                                     batch_size: int = 32, seed: int = 0
                                     ) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """(train, validation) batches from numpy arrays: `validation_fraction` of the examples, every
    1/fraction-th one (see split_validation), held out; train shuffled, validation in order."""
    train, validation = split_validation(_examples_from_arrays(x, y), validation_fraction)
    return (_batched(train, batch_size, True, seed, buffer=len(x)),
            _batched(validation, batch_size, False, seed))


def split_validation(examples: tf.data.Dataset, fraction: float
                     ) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """(rest, validation) of an unbatched, unshuffled dataset of examples.

    Example i goes to the validation slice when floor((i + 1) * fraction) > floor(i * fraction):
    every 1/fraction-th example, evenly spread over the files, the same on every run and
    disjoint from the rest. Split before shuffling.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or \
            not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation_fraction must be in range (0, 1), got {fraction!r}")

    def held_out(index, _example):
        i = tf.cast(index, tf.float64)
        return tf.math.floor((i + 1.0) * fraction) > tf.math.floor(i * fraction)

    indexed = examples.enumerate()
    validation = indexed.filter(held_out).map(lambda _i, example: example)
    rest = indexed.filter(lambda i, e: tf.logical_not(held_out(i, e))).map(lambda _i, e: e)
    return rest, validation


def _examples_from_arrays(x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
    if len(x) == 0:
        raise DatasetError("The dataset is empty: no examples to train or evaluate on.")
    if len(x) != len(y):
        raise DatasetError(f"Features and labels differ in length: {len(x)} vs {len(y)}.")
    return tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y.astype(np.int64)))


def _batched(examples: tf.data.Dataset, batch_size: int, shuffle: bool, seed: int,
             buffer: int = 4096) -> tf.data.Dataset:
    if shuffle:
        examples = examples.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    return examples.batch(batch_size).prefetch(tf.data.AUTOTUNE)


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
    return _batched(examples_from_tfrecords(pattern_or_dir, spec), batch_size, shuffle, seed)


def train_and_validation_from_tfrecords(pattern_or_dir: str | Sequence[str], spec: FeatureSpec,
                                        validation_fraction: float, batch_size: int = 32,
                                        seed: int = 0) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """(train, validation) batches of one split (the train split): `validation_fraction` of its
    examples held out (split_validation, before shuffling); train shuffled, validation in
    order."""
    train, validation = split_validation(examples_from_tfrecords(pattern_or_dir, spec),
                                         validation_fraction)
    return (_batched(train, batch_size, True, seed), _batched(validation, batch_size, False, seed))


def examples_from_tfrecords(pattern_or_dir: str | Sequence[str],
                            spec: FeatureSpec) -> tf.data.Dataset:
    """Unbatched (features, label) pairs parsed from TFRecord files of tf.Example, in a
    canonical order for splits up to CANONICAL_ORDER_MAX_BYTES, else in file order (see
    dataset_from_tfrecords)."""
    files = tfrecord_files(pattern_or_dir)
    if not files:
        raise DatasetError(
            f"No TFRecord files at {pattern_or_dir!r}. Point the examples path at a directory or "
            "glob of TFRecord files of tf.Example (e.g. an ExampleGen split such as Split-train).")
    compression = "GZIP" if files[0].endswith(".gz") else None
    raw = tf.data.TFRecordDataset(files, compression_type=compression)
    _check_first_record(raw, spec, files[0])
    if sum(tf.io.gfile.stat(f).length for f in files) <= CANONICAL_ORDER_MAX_BYTES:
        raw = tf.data.Dataset.from_tensor_slices(sorted(
            tf.train.Example.FromString(record.numpy()).SerializeToString(deterministic=True)
            for record in raw))

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

    return raw.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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


@dataclasses.dataclass(frozen=True)
class SplitStatistics:
    """One split read through: its files, examples and how many examples carry each label."""

    files: tuple[str, ...]
    num_examples: int
    label_counts: dict[int, int]

    @property
    def labels(self) -> list[int]:
        return sorted(self.label_counts)


def _compression(path: str) -> str | None:
    return "GZIP" if path.endswith(".gz") else None


def _tf_message(exc: tf.errors.OpError) -> str:
    """TensorFlow's error text without its op and function-node decorations."""
    text = re.sub(r"\{\{function_node[^}]*\}\}\s*", "", exc.message)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", text, flags=re.S).strip().rstrip(".")


def _readable_records(path: str) -> int:
    """How many records of a broken file read before the break (one at a time: slow, so only
    after a batched read failed)."""
    count = 0
    try:
        for _ in tf.data.TFRecordDataset(path, compression_type=_compression(path)):
            count += 1
    except tf.errors.OpError:
        pass
    return count


def _read_through(path: str, batches: tf.data.Dataset, what: str) -> Iterator:
    """Yields the batches of one file's dataset; a corrupt, truncated or unreadable file raises
    DatasetError naming it."""
    try:
        yield from batches
    except tf.errors.DataLossError as exc:
        raise DatasetError(
            f"TFRecord file {path!r} is corrupt or truncated: {_tf_message(exc)}, after "
            f"{_readable_records(path)} readable records. Write the file again (re-run the "
            "export or ExampleGen that made it) or move it out of the split.") from None
    except tf.errors.InvalidArgumentError as exc:
        raise DatasetError(
            f"TFRecord file {path!r} holds a record that is not a tf.Example {what}: "
            f"{_tf_message(exc)}. Check the program that wrote it and the feature / label "
            "keys.") from None
    except (tf.errors.NotFoundError, tf.errors.PermissionDeniedError) as exc:
        raise DatasetError(f"Cannot read TFRecord file {path!r}: {_tf_message(exc)}.") from None


# A TFRecord is its length (8 bytes), a CRC of it (4), the payload and a CRC of that (4).
_RECORD_OVERHEAD = 16


def _stored_bytes(path: str) -> int:
    """The file's size, uncompressed (a truncated gzip stream raises DatasetError)."""
    if _compression(path) is None:
        return int(tf.io.gfile.stat(path).length)
    size = 0
    try:
        with tf.io.gfile.GFile(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as stream:
            while chunk := stream.read(1 << 20):
                size += len(chunk)
    except (EOFError, OSError, zlib.error) as exc:
        raise DatasetError(
            f"TFRecord file {path!r} is not a complete gzip stream ({exc}): it was cut off or is "
            "not gzip-compressed although its name ends in .gz. Write the file again (re-run the "
            "export or ExampleGen that made it) or move it out of the split.") from None
    return size


def _check_complete(path: str, records: int, payload_bytes: int) -> None:
    """tf.data stops silently at a record cut off at the end of a file; its size tells."""
    extra = _stored_bytes(path) - (payload_bytes + _RECORD_OVERHEAD * records)
    if extra:
        raise DatasetError(
            f"TFRecord file {path!r} is truncated: {extra} bytes of a cut-off record follow its "
            f"{records} complete records. Write the file again (re-run the export or ExampleGen "
            "that made it) or move it out of the split.")


def count_records(path: str) -> int:
    """Records in one TFRecord file, read through to the end (DatasetError naming the file when
    it is corrupt, truncated or unreadable)."""
    raw = tf.data.TFRecordDataset(path, compression_type=_compression(path))
    records = payload = 0
    for lengths in _read_through(path, raw.map(tf.strings.length).batch(4096), "file"):
        records += int(lengths.shape[0])
        payload += int(np.sum(lengths.numpy(), dtype=np.int64))
    _check_complete(path, records, payload)
    return records


def split_statistics(pattern_or_dir: str | Sequence[str], spec: FeatureSpec) -> SplitStatistics:
    """Reads every record of a split once: counts the examples and their labels, checks that the
    first record holds spec's feature (with the right number of values) and label.

    Raises DatasetError naming the file when one is corrupt, truncated or not tf.Example, or
    when the split has no files or no examples.
    """
    files = tfrecord_files(pattern_or_dir)
    if not files:
        raise DatasetError(
            f"No TFRecord files at {pattern_or_dir!r}. Point the examples path at a directory or "
            "glob of TFRecord files of tf.Example.")
    description = {spec.label_key: tf.io.FixedLenFeature([], tf.int64)}
    counts: dict[int, int] = {}
    total = 0
    checked = False
    for path in files:
        raw = tf.data.TFRecordDataset(path, compression_type=_compression(path))
        if not checked and list(_read_through(path, raw.take(1).batch(1), "file")):
            _check_first_record(raw, spec, path)
            checked = True
        batches = raw.batch(4096).map(lambda records: (
            tf.io.parse_example(records, description)[spec.label_key],
            tf.strings.length(records)))
        records = payload = 0
        for labels, lengths in _read_through(path, batches,
                                             f"with an int64 label {spec.label_key!r}"):
            values, found = np.unique(labels.numpy(), return_counts=True)
            for value, count in zip(values, found):
                counts[int(value)] = counts.get(int(value), 0) + int(count)
            records += int(lengths.shape[0])
            payload += int(np.sum(lengths.numpy(), dtype=np.int64))
        _check_complete(path, records, payload)
        total += records
    if not total:
        raise DatasetError(
            f"The TFRecord files at {pattern_or_dir!r} hold no examples. An empty split cannot be "
            "used for training or evaluation: check the export or the split pattern.")
    return SplitStatistics(tuple(files), total, counts)


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


__all__ = ["FeatureSpec", "dataset_from_arrays", "dataset_from_tfrecords", "examples_from_tfrecords",
           "train_and_validation_from_arrays", "train_and_validation_from_tfrecords",
           "split_validation", "SplitStatistics", "split_statistics", "count_records",
           "representative_dataset", "write_examples", "count_examples",
           "tfrecord_files"]
