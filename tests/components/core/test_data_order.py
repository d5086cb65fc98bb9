"""Same data, same order: a split read back is independent of the order its records were
written in (TFX's ExampleGens reshuffle them on every fresh run)."""
from __future__ import annotations

import numpy as np

from collabopt.components.core.data import (FeatureSpec, dataset_from_tfrecords,
                                            train_and_validation_from_tfrecords, write_examples)


def _written(tmp_path, name, x, y, spec):
    path = tmp_path / name / "part.tfrecord"
    write_examples(str(path), x, y, spec)
    return str(path.parent)


def test_reading_is_independent_of_record_order(tmp_path):
    spec = FeatureSpec("x", "y", (4,))
    rng = np.random.default_rng(0)
    x = rng.random((50, 4), dtype=np.float32)
    y = rng.integers(0, 3, 50)
    order = rng.permutation(50)
    a = _written(tmp_path, "a", x, y, spec)
    b = _written(tmp_path, "b", x[order], y[order], spec)

    def labels(ds):
        return np.concatenate([np.asarray(labels) for _, labels in ds])

    for shuffle in (False, True):
        assert (labels(dataset_from_tfrecords(a, spec, 8, shuffle=shuffle, seed=3))
                == labels(dataset_from_tfrecords(b, spec, 8, shuffle=shuffle, seed=3))).all()
    (train_a, val_a), (train_b, val_b) = (train_and_validation_from_tfrecords(d, spec, 0.2, 8)
                                          for d in (a, b))
    assert (labels(val_a) == labels(val_b)).all() and len(labels(val_a)) == 10
    assert (labels(train_a) == labels(train_b)).all()
