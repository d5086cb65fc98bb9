"""Every path of the deployment tree, in core alone, down to the int8 `.tflite`.

Each leaf must keep in its final int8 weights what the steps before it achieved: the zeros of
pruning (>= 45 % of every kernel at a 50 % target) and the clusters of clustering (at most 8
values per output channel for 8 clusters; a zero kept by sparsity-preserving clustering may be a
ninth). Plain QAT after clustering is the contrast: it does not keep the clusters.
"""
from __future__ import annotations

import pytest

from collabopt.components.core.data import representative_dataset
from collabopt.components.core.keras_compat import keras
from collabopt.components.core.metrics import tflite_accuracy, tflite_weight_structure
from collabopt.components.core.qat import QATMode, quantize_aware_train
from collabopt.components.core.tflite import QuantizationMode, convert
from tests.components.core.helpers import ONE_EPOCH

CLUSTERS = 8
PRUNED = {"prune>ptq", "prune>pqat", "prune>cluster>ptq", "prune>cluster>pcqat"}
CLUSTERED = {"cluster>ptq", "cluster>cqat", "prune>cluster>ptq", "prune>cluster>pcqat"}


@pytest.fixture(scope="module")
def leaves(trained_digits_model, pruned, clustered, pruned_clustered, digits_train_ds):
    """Leaf technique path -> int8 .tflite bytes (int8 I/O), built as the tree builds them."""
    calibration = representative_dataset(digits_train_ds, 100)

    def ptq(model):
        return convert(model, QuantizationMode.INT8, representative_data=calibration)

    def qat(model, mode, seed):
        keras.utils.set_random_seed(seed)
        return convert(quantize_aware_train(model, digits_train_ds, mode, ONE_EPOCH),
                       QuantizationMode.INT8)

    return {
        "ptq": ptq(trained_digits_model),
        "qat": qat(trained_digits_model, QATMode.QAT, 1),
        "prune>ptq": ptq(pruned),
        "prune>pqat": qat(pruned, QATMode.PQAT, 2),
        "cluster>ptq": ptq(clustered),
        "cluster>cqat": qat(clustered, QATMode.CQAT, 3),
        "prune>cluster>ptq": ptq(pruned_clustered),
        "prune>cluster>pcqat": qat(pruned_clustered, QATMode.PCQAT, 4),
    }


@pytest.mark.parametrize("path", sorted(PRUNED))
def test_pruned_paths_keep_zeros_in_every_int8_kernel(leaves, path):
    structure = tflite_weight_structure(leaves[path])
    assert len(structure.kernels) == 5
    for kernel in structure.kernels:
        assert kernel.sparsity >= 0.45, (path, kernel)


@pytest.mark.parametrize("path", sorted(CLUSTERED))
def test_clustered_paths_keep_clusters_per_int8_output_channel(leaves, path):
    limit = CLUSTERS + (1 if path in PRUNED else 0)
    for kernel in tflite_weight_structure(leaves[path]).kernels:
        assert kernel.max_unique_per_channel <= limit, (path, kernel)


@pytest.mark.parametrize("path", ["ptq", "qat", "prune>ptq", "prune>pqat", "cluster>ptq",
                                  "cluster>cqat", "prune>cluster>ptq", "prune>cluster>pcqat"])
def test_every_leaf_is_fully_int8_and_accurate(leaves, path, digits_eval_ds):
    assert tflite_accuracy(leaves[path], digits_eval_ds) >= 0.85


def test_unoptimized_leaves_have_neither_zeros_nor_clusters(leaves):
    for path in ("ptq", "qat"):
        structure = tflite_weight_structure(leaves[path])
        assert structure.sparsity < 0.1
        assert structure.max_unique_per_channel > 4 * CLUSTERS


def test_plain_qat_after_clustering_loses_the_clusters_cqat_keeps(clustered, leaves,
                                                                   digits_train_ds):
    keras.utils.set_random_seed(3)
    plain = convert(quantize_aware_train(clustered, digits_train_ds, QATMode.QAT, ONE_EPOCH),
                    QuantizationMode.INT8)
    lost = tflite_weight_structure(plain).max_unique_per_channel
    kept = tflite_weight_structure(leaves["cluster>cqat"]).max_unique_per_channel
    assert kept <= CLUSTERS < lost


def test_collaborative_leaves_compress_best(leaves):
    from collabopt.components.core.metrics import gzip_size

    sizes = {path: gzip_size(data) for path, data in leaves.items()}
    assert sizes["prune>cluster>pcqat"] < sizes["prune>pqat"] < sizes["qat"]
    assert sizes["prune>cluster>ptq"] < sizes["cluster>ptq"] < sizes["ptq"]
