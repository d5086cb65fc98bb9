"""core.checks and core.data.split_statistics: data and model mistakes caught before training,
each one error naming the file or key and the fix."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from collabopt.components.core.checks import (check_labels, check_model_matches_data,
                                              check_tfrecord_files)
from collabopt.components.core.data import FeatureSpec, split_statistics, write_examples
from collabopt.components.core.errors import DatasetError, ModelDataMismatchError
from collabopt.components.core.keras_compat import keras

SPEC = FeatureSpec(feature_key="x", label_key="y", feature_shape=(8, 8, 1))


def _write(path, n=60, labels=None, spec=SPEC):
    rng = np.random.default_rng(0)
    x = rng.random((n,) + spec.feature_shape).astype(np.float32)
    y = np.arange(n) % 10 if labels is None else np.asarray(labels)
    return write_examples(str(path), x, y, spec)


def _model(input_shape=(8, 8, 1), outputs=10, activation=None):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    return keras.Model(inputs, keras.layers.Dense(outputs, activation=activation)(x))


@pytest.fixture()
def good_file(tmp_path):
    return _write(tmp_path / "good" / "part-0.tfrecord")


def test_split_statistics_counts_examples_and_labels_in_one_pass(tmp_path):
    _write(tmp_path / "split" / "a.tfrecord", n=30)
    _write(tmp_path / "split" / "b.tfrecord", n=25, labels=[3] * 25)
    stats = split_statistics(str(tmp_path / "split"), SPEC)
    assert stats.num_examples == 55 and len(stats.files) == 2
    assert stats.labels == list(range(10)) and stats.label_counts[3] == 3 + 25


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[: len(b) // 2 + 5], r"is truncated: 5 bytes of a cut-off record follow its 30"),
    (lambda b: b[:600] + bytes(40) + b[640:], r"is corrupt or truncated: corrupted record at"),
    (lambda b: b"this is not a TFRecord file" * 5, r"Is this even a TFRecord file"),
])
def test_a_damaged_file_is_named_with_the_fix(good_file, tmp_path, damage, match):
    with open(good_file, "rb") as f:
        data = f.read()
    bad = tmp_path / "train" / "part-1.tfrecord"
    bad.parent.mkdir()
    bad.write_bytes(damage(data))
    _write(tmp_path / "train" / "part-0.tfrecord")
    for check in (lambda: split_statistics(str(tmp_path / "train"), SPEC),
                  lambda: check_tfrecord_files([good_file, str(bad)])):
        with pytest.raises(DatasetError, match=match) as info:
            check()
        assert str(bad) in str(info.value) and "Write the file again" in str(info.value)
        assert "function_node" not in str(info.value)
    assert check_tfrecord_files([good_file]) == {good_file: 60}


def test_a_cut_off_gzip_file_is_named(good_file, tmp_path):
    with open(good_file, "rb") as f:
        compressed = gzip.compress(f.read())
    (tmp_path / "gz").mkdir()
    whole = tmp_path / "gz" / "whole.tfrecord.gz"
    whole.write_bytes(compressed)
    assert split_statistics(str(whole), SPEC).num_examples == 60
    cut = tmp_path / "gz" / "cut.tfrecord.gz"
    cut.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DatasetError, match="cut.tfrecord.gz"):
        split_statistics(str(cut), SPEC)


def test_records_that_are_not_examples_or_lack_the_label_are_named(tmp_path):
    other = FeatureSpec(feature_key="x", label_key="digit", feature_shape=(8, 8, 1))
    path = _write(tmp_path / "other.tfrecord", spec=other)
    with pytest.raises(DatasetError, match=r"(?s)'y' is not in the examples at .*other\.tfrecord"):
        split_statistics(path, SPEC)


def test_labels_outside_the_outputs_name_split_count_and_values(tmp_path):
    train = split_statistics(_write(tmp_path / "train.tfrecord"), SPEC)
    labels = [99 if i % 4 == 0 else i % 10 for i in range(40)]
    evaluation = split_statistics(_write(tmp_path / "eval.tfrecord", n=40, labels=labels), SPEC)
    check_labels({"train": train, "eval": evaluation}, 100)
    with pytest.raises(DatasetError) as info:
        check_labels({"train": train, "eval": evaluation}, 10, "y")
    message = str(info.value)
    assert "split 'eval' has 10 of 40 examples (25.0%) with 'y' values 99 (10x)" in message
    assert "split 'train'" not in message and "Dense(100)" in message
    negative = split_statistics(_write(tmp_path / "neg.tfrecord", n=5, labels=[-1] * 5), SPEC)
    with pytest.raises(DatasetError, match=r"split 'train' has 5 of 5 .* values -1 \(5x\)"):
        check_labels({"train": negative}, None)


def test_model_that_matches_the_data_passes(good_file):
    stats = {"train": split_statistics(good_file, SPEC)}
    check_model_matches_data(_model(), SPEC, stats)
    check_model_matches_data(_model(outputs=12, activation="softmax"), SPEC, stats)


def test_a_single_unit_head_cannot_classify_ten_labels(good_file):
    stats = {"train": split_statistics(good_file, SPEC), "eval": split_statistics(good_file, SPEC)}
    with pytest.raises(ModelDataMismatchError, match=r"(?s)single output unit.*10 values.*Dense\(10\)"):
        check_model_matches_data(_model(outputs=1, activation="sigmoid"), SPEC, stats)


def test_too_few_outputs_for_the_labels_names_the_split(good_file):
    stats = {"train": split_statistics(good_file, SPEC)}
    with pytest.raises(DatasetError, match=r"(?s)model's 5 outputs.*split 'train'.*5 \(6x\)"):
        check_model_matches_data(_model(outputs=5), SPEC, stats)


def test_feature_shape_with_the_right_size_but_another_layout(tmp_path):
    flat = FeatureSpec(feature_key="x", label_key="y", feature_shape=(64,))
    stats = {"train": split_statistics(_write(tmp_path / "flat.tfrecord", spec=flat), flat)}
    with pytest.raises(ModelDataMismatchError,
                       match=r"feature_shape \[64\] lays the 64 values .*Set feature_shape to "
                             r"\[8, 8, 1\]"):
        check_model_matches_data(_model((8, 8, 1)), flat, stats)
    with pytest.raises(ModelDataMismatchError, match=r"gives 64 values .*\(16, 16, 1\) \(256"):
        check_model_matches_data(_model((16, 16, 1)), flat, stats)
    check_model_matches_data(_model((64,)), flat, stats)
