"""Optimized digits models shared by the core tests: each trained once per session."""
from __future__ import annotations

import pytest

from collabopt.components.core.clustering import ClusteringParams, cluster
from collabopt.components.core.keras_compat import keras
from collabopt.components.core.pruning import PruningParams, prune
from tests.components.core.helpers import ONE_EPOCH


@pytest.fixture(scope="session")
def pruned(trained_digits_model, digits_train_ds):
    keras.utils.set_random_seed(5)
    return prune(trained_digits_model, digits_train_ds, PruningParams(target_sparsity=0.5),
                 ONE_EPOCH)


@pytest.fixture(scope="session")
def pruned_clustered(pruned, digits_train_ds):
    return cluster(pruned, digits_train_ds,
                   ClusteringParams(number_of_clusters=8, preserve_sparsity=True), ONE_EPOCH)


@pytest.fixture(scope="session")
def clustered(trained_digits_model, digits_train_ds):
    keras.utils.set_random_seed(6)
    return cluster(trained_digits_model, digits_train_ds.take(15),
                   ClusteringParams(number_of_clusters=8), ONE_EPOCH)




@pytest.fixture(scope="session")
def digits_train_validation(digits_arrays):
    """The digits train split with 10 % held out for fine-tuning until recovered."""
    from collabopt.components.core.data import train_and_validation_from_arrays

    (x, y), _ = digits_arrays
    return train_and_validation_from_arrays(x, y, validation_fraction=0.1)
