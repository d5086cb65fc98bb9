"""Data and model mistakes caught before any training, each as one error naming the file or key
and the fix. Pure functions on files, statistics and Keras models (no TFX).

    stats = {"train": data.split_statistics(train_files, spec), "eval": ...}   # one pass each
    check_model_matches_data(model, spec, stats)   # input layout, output size, labels

`data.split_statistics` already refuses corrupt, truncated and non-tf.Example files (naming the
file); `check_tfrecord_files` is that check alone, without a feature spec.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from collabopt.components.core.data import FeatureSpec, SplitStatistics, count_records
from collabopt.components.core.errors import (DatasetError, ModelDataMismatchError,
                                              UnsupportedModelError)
from collabopt.components.core.keras_compat import keras, tf

_SHOWN_VALUES = 8


def check_tfrecord_files(paths: Sequence[str]) -> dict[str, int]:
    """Reads every file through with tf.data; returns its number of records. Raises DatasetError
    naming the first file that is missing, unreadable, corrupt or truncated."""
    counts = {}
    for path in paths:
        if not tf.io.gfile.exists(path):
            raise DatasetError(f"TFRecord file {path!r} does not exist.")
        counts[path] = count_records(path)
    return counts


def _values(counts: dict[int, int]) -> str:
    shown = sorted(counts)[:_SHOWN_VALUES]
    text = ", ".join(f"{v} ({counts[v]}x)" for v in shown)
    return text + (f" and {len(counts) - len(shown)} more" if len(counts) > len(shown) else "")


def check_labels(statistics: Mapping[str, SplitStatistics], num_classes: int | None,
                 label_key: str = "label") -> None:
    """Every label of every split is a class the model can output: 0 <= label < num_classes
    (None: only that labels are >= 0, e.g. before the model exists). Raises DatasetError naming
    the split(s), how many examples and which values are out of range, and the fix."""
    problems = []
    for split, stats in statistics.items():
        bad = {v: n for v, n in stats.label_counts.items()
               if v < 0 or (num_classes is not None and v >= num_classes)}
        if bad:
            examples = sum(bad.values())
            problems.append(
                f"split '{split}' has {examples} of {stats.num_examples} examples "
                f"({examples / stats.num_examples:.1%}) with {label_key!r} values {_values(bad)}")
    if not problems:
        return
    allowed = (f"the model's {num_classes} outputs (class ids 0..{num_classes - 1})"
               if num_classes is not None else "class ids (integers >= 0)")
    largest = max(max(stats.label_counts) for stats in statistics.values())
    fix = (f"Fix the labels in the data, or give the model one output per class (a "
           f"Dense({largest + 1}) head for labels up to {largest})" if num_classes is not None
           else "Fix the labels in the data: classes are numbered 0, 1, 2, ...")
    raise DatasetError(f"Labels outside {allowed}: {'; '.join(problems)}. {fix}.")


def _single(shapes, what: str, model: keras.Model):
    if isinstance(shapes, list):
        if len(shapes) != 1:
            raise UnsupportedModelError(
                f"Model '{model.name}' has {len(shapes)} {what}s; collabopt optimizes models with "
                f"one {what} (features in, class scores out).")
        return tuple(shapes[0])
    return tuple(shapes)


def check_model_matches_data(model: keras.Model, spec: FeatureSpec,
                             statistics: Mapping[str, SplitStatistics]) -> None:
    """The model reads spec's features and can output every label of every split.

    ModelDataMismatchError: the input takes another number of values than feature_shape gives,
    or the same values in another layout (e.g. feature_shape [64] for an (8, 8, 1) input); the
    output is not one score per class, or a single unit (a sigmoid / regression head).
    DatasetError (check_labels): labels outside the model's outputs, in either split.
    """
    input_shape = _single(model.input_shape, "input", model)[1:]
    feature_shape = tuple(spec.feature_shape)
    fits = len(input_shape) == len(feature_shape) and all(
        m is None or m == f for m, f in zip(input_shape, feature_shape))
    if not fits:
        known = None not in input_shape
        needed = int(np.prod(input_shape)) if known else None
        shown = tuple(input_shape)
        if needed == spec.num_values:
            raise ModelDataMismatchError(
                f"feature_shape {list(feature_shape)} lays the {spec.num_values} values of "
                f"{spec.feature_key!r} out differently from the input of model '{model.name}', "
                f"{shown}. Set feature_shape to {list(shown)} (the model's input without the "
                "batch dimension).")
        raise ModelDataMismatchError(
            f"feature_shape {list(feature_shape)} gives {spec.num_values} values of "
            f"{spec.feature_key!r} per example, but the input of model '{model.name}' is {shown}"
            + (f" ({needed} values)" if known else "") + ". Set feature_shape to the model's "
            "input shape, or use the model these examples were made for.")

    output_shape = _single(model.output_shape, "output", model)
    labels = sorted(set().union(*(s.label_counts for s in statistics.values())))
    if len(output_shape) != 2 or output_shape[-1] is None:
        raise ModelDataMismatchError(
            f"Model '{model.name}' outputs {output_shape}; collabopt needs one score per class, "
            "(batch, classes), e.g. a final Dense(classes) with logits or softmax.")
    classes = int(output_shape[-1])
    if classes == 1:
        wanted = max(2, labels[-1] + 1 if labels else 2)
        raise ModelDataMismatchError(
            f"Model '{model.name}' has a single output unit (a sigmoid or regression head), but "
            f"collabopt fine-tunes and evaluates classifiers with one output per class (sparse "
            f"categorical cross-entropy, argmax), and the labels take {len(labels)} values "
            f"({_values({v: 1 for v in labels}).replace(' (1x)', '')}). Give the model a "
            f"Dense({wanted}) head (logits or softmax) and train it again.")
    check_labels(statistics, classes, spec.label_key)


__all__ = ["check_tfrecord_files", "check_labels", "check_model_matches_data"]
