"""Shared fixtures: the digits data and one small trained CNN, made once per session."""
from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import pytest  # noqa: E402

from collabopt.components.core.data import dataset_from_arrays  # noqa: E402
from collabopt.pipelines.demo.data import load_digits_arrays  # noqa: E402
from collabopt.pipelines.demo.model import train_digits_cnn  # noqa: E402


@pytest.fixture(scope="session")
def digits_arrays():
    return load_digits_arrays()


@pytest.fixture(scope="session")
def digits_train_ds(digits_arrays):
    (x, y), _ = digits_arrays
    return dataset_from_arrays(x, y, batch_size=32, shuffle=True)


@pytest.fixture(scope="session")
def digits_eval_ds(digits_arrays):
    _, (x, y) = digits_arrays
    return dataset_from_arrays(x, y, batch_size=64)


@pytest.fixture(scope="session")
def trained_digits_model(digits_train_ds, digits_eval_ds):
    """The reference CNN trained to ~95 % on digits. Tests must clone it before changing it."""
    return train_digits_cnn(digits_train_ds, epochs=12)
