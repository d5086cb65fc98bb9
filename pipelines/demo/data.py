"""scikit-learn's 8x8 digits (shipped with the package: no download) as tf.Example TFRecords."""
from __future__ import annotations

import os

import numpy as np

from collabopt.components.core.data import FeatureSpec, write_examples

DIGITS_SPEC = FeatureSpec(feature_key="image", label_key="label", feature_shape=(8, 8, 1))
NUM_CLASSES = 10


def load_digits_arrays(eval_fraction: float = 0.2, seed: int = 0):
    """(x_train, y_train), (x_eval, y_eval); pixels scaled to [0, 1], shape (N, 8, 8, 1)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_eval = int(round(len(x) * eval_fraction))
    eval_idx, train_idx = order[:n_eval], order[n_eval:]
    return (x[train_idx], y[train_idx]), (x[eval_idx], y[eval_idx])


def write_digits_examples(out_dir: str, eval_fraction: float = 0.2, seed: int = 0) -> dict[str, str]:
    """Writes `train/digits.tfrecord` and `eval/digits.tfrecord` under out_dir; returns the paths.

    The layout is what TFX's ImportExampleGen reads with `input_config` patterns `train/*` and
    `eval/*`.
    """
    (x_train, y_train), (x_eval, y_eval) = load_digits_arrays(eval_fraction, seed)
    return {
        "train": write_examples(os.path.join(out_dir, "train", "digits.tfrecord"),
                                x_train, y_train, DIGITS_SPEC),
        "eval": write_examples(os.path.join(out_dir, "eval", "digits.tfrecord"),
                               x_eval, y_eval, DIGITS_SPEC),
    }
