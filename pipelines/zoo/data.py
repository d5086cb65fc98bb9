"""Data the zoo models learn from, generated here (no downloads), and its tf.Example writer.

- `digits_images`: scikit-learn's 8x8 digits (shipped with the package) resized to a square
  image with any number of channels (bilinear, channels tiled) — for the image models.
- `signals_1d`: 1-D signals whose class sets the frequency of a sine (random phase, amplitude and
  a little frequency jitter) plus Gaussian noise — for the 1-D CNN.
- `kws_features`: keyword-spotting-like 49x10 "MFCC" maps: each class is a fixed arrangement of
  a few Gaussian blobs over (frame, coefficient), shifted in time, scaled and noisy — for DS-CNN.

Every generator returns `(x_train, y_train), (x_eval, y_eval)` as float32 / int64 arrays and is
deterministic in its `seed`. `write_splits` stores such arrays as TFRecords of tf.Example in the
`train/` and `eval/` layout TFX's ImportExampleGen reads with patterns `train/*` and `eval/*`.
"""
from __future__ import annotations

import os

import numpy as np

from collabopt.components.core.data import FeatureSpec, write_examples

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _split(x: np.ndarray, y: np.ndarray, eval_fraction: float, seed: int) -> Arrays:
    order = np.random.default_rng(seed).permutation(len(x))
    n_eval = int(round(len(x) * eval_fraction))
    eval_idx, train_idx = order[:n_eval], order[n_eval:]
    return (x[train_idx], y[train_idx]), (x[eval_idx], y[eval_idx])


def digits_images(size: int = 8, channels: int = 1, flat: bool = False,
                  eval_fraction: float = 0.2, seed: int = 0) -> Arrays:
    """Digits (10 classes, 1797 images) as (N, size, size, channels) in [0, 1], or (N, size *
    size * channels) with `flat`. The same split as the digits demo for the same seed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    if size != 8:
        from collabopt.components.core.keras_compat import tf

        x = tf.image.resize(x, (size, size), method="bilinear").numpy().astype(np.float32)
    if channels != 1:
        x = np.repeat(x, channels, axis=-1)
    if flat:
        x = x.reshape(len(x), -1)
    return _split(x, digits.target.astype(np.int64), eval_fraction, seed)


def signals_1d(num_examples: int = 2000, length: int = 128, num_classes: int = 8,
               noise: float = 1.0, eval_fraction: float = 0.2, seed: int = 0) -> Arrays:
    """(N, length, 1) signals: class c is a sine of 2 + 1.5 c cycles per window (±0.3 jitter),
    random phase and amplitude in [0.5, 1.5], plus N(0, noise²) noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, num_examples)
    cycles = 2.0 + 1.5 * y + rng.uniform(-0.3, 0.3, num_examples)
    t = np.arange(length) / length
    phase = rng.uniform(0, 2 * np.pi, num_examples)
    amplitude = rng.uniform(0.5, 1.5, num_examples)
    x = amplitude[:, None] * np.sin(2 * np.pi * cycles[:, None] * t[None, :] + phase[:, None])
    x = x + rng.normal(0.0, noise, x.shape)
    return _split(x[..., None].astype(np.float32), y.astype(np.int64), eval_fraction, seed)


def kws_features(num_examples: int = 2000, frames: int = 49, coefficients: int = 10,
                 num_classes: int = 10, blobs: int = 4, max_shift: int = 8, noise: float = 1.2,
                 eval_fraction: float = 0.2, seed: int = 0) -> Arrays:
    """(N, frames, coefficients, 1) maps: each class places `blobs` Gaussian blobs (fixed per
    class) over (frame, coefficient); an example shifts them by up to ±max_shift frames, scales
    them by [0.7, 1.3] and adds N(0, noise²) noise."""
    templates_rng = np.random.default_rng(1234)  # the classes are the same for every seed
    centres = np.stack([templates_rng.uniform((8, 0), (frames - 8, coefficients - 1),
                                              (blobs, 2)) for _ in range(num_classes)])
    widths = templates_rng.uniform((2.0, 0.8), (5.0, 2.0), (num_classes, blobs, 2))
    signs = templates_rng.choice((-1.0, 1.0), (num_classes, blobs))

    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, num_examples)
    shift = rng.integers(-max_shift, max_shift + 1, num_examples)
    scale = rng.uniform(0.7, 1.3, num_examples)
    f = np.arange(frames)[None, :, None, None]
    c = np.arange(coefficients)[None, None, :, None]
    centre_f = centres[y][:, None, None, :, 0] + shift[:, None, None, None]
    centre_c = centres[y][:, None, None, :, 1]
    width_f, width_c = widths[y][:, None, None, :, 0], widths[y][:, None, None, :, 1]
    blob = np.exp(-0.5 * (((f - centre_f) / width_f) ** 2 + ((c - centre_c) / width_c) ** 2))
    x = np.sum(signs[y][:, None, None, :] * blob, axis=-1) * scale[:, None, None]
    x = x + rng.normal(0.0, noise, x.shape)
    return _split(x[..., None].astype(np.float32), y.astype(np.int64), eval_fraction, seed)


def write_splits(out_dir: str, arrays: Arrays, feature_key: str = "image",
                 label_key: str = "label", name: str = "data") -> dict[str, str]:
    """Writes `train/<name>.tfrecord` and `eval/<name>.tfrecord` of tf.Example under out_dir.

    Each example holds the flattened float features under `feature_key` and the int64 class under
    `label_key`. Returns the paths by split.
    """
    (x_train, y_train), (x_eval, y_eval) = arrays
    spec = FeatureSpec(feature_key=feature_key, label_key=label_key,
                       feature_shape=tuple(x_train.shape[1:]))
    return {split: write_examples(os.path.join(out_dir, split, f"{name}.tfrecord"), x, y, spec)
            for split, x, y in (("train", x_train, y_train), ("eval", x_eval, y_eval))}


__all__ = ["digits_images", "signals_1d", "kws_features", "write_splits"]
