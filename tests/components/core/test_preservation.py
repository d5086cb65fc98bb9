"""core.preservation: pure checks that a step kept the sparsity and clusters of its input."""
from __future__ import annotations

import pytest

from collabopt.components.core.errors import StructureLostError
from collabopt.components.core.metrics import KernelStats, WeightStructure
from collabopt.components.core.preservation import (check_clusters_kept, check_sparsity_kept,
                                          clustered_kernels, is_clustered, is_pruned,
                                          match_kernels)


def kernel(layer, sparsity=0.0, unique=None, per_channel=None, size=1024):
    unique = size if unique is None else unique
    return KernelStats(layer=layer, size=size, sparsity=sparsity, unique_values=unique,
                       max_unique_per_channel=per_channel if per_channel is not None else unique)


def structure(*kernels):
    return WeightStructure(tuple(kernels))


def test_match_kernels_understands_wrapper_prefixes_and_tflite_paths():
    before = structure(kernel("conv1", size=144), kernel("dense1", size=2048))
    after = structure(kernel("FULLY_CONNECTED:digits_cnn/quant_dense1/MatMul", size=2048),
                      kernel("quant_conv1", size=144))
    pairs = match_kernels(before, after)
    assert [(b.layer, a.layer) for b, a in pairs] == [
        ("conv1", "quant_conv1"), ("dense1", "FULLY_CONNECTED:digits_cnn/quant_dense1/MatMul")]


def test_match_kernels_falls_back_to_size_for_unnamed_kernels():
    before = structure(kernel("conv1", size=144), kernel("conv2", size=4608))
    after = structure(kernel("CONV_2D:a", size=4608), kernel("CONV_2D:b", size=144))
    assert {b.layer: a.layer for b, a in match_kernels(before, after)} == {
        "conv1": "CONV_2D:b", "conv2": "CONV_2D:a"}


def test_pqat_that_lost_zeros_names_layer_and_values():
    before = structure(kernel("conv2", sparsity=0.5), kernel("dense1", sparsity=0.5))
    after = structure(kernel("conv2", sparsity=0.5), kernel("dense1", sparsity=0.31))
    message = r"PreservingQAT\(pqat\).*'dense1'.*0\.310 after vs 0\.500 before.*mode='pqat'"
    with pytest.raises(StructureLostError, match=message):
        check_sparsity_kept(before, after, step="PreservingQAT(pqat)")


def test_sparsity_within_tolerance_or_gained_passes():
    before = structure(kernel("conv2", sparsity=0.5), kernel("logits", sparsity=0.0))
    after = structure(kernel("conv2", sparsity=0.49), kernel("logits", sparsity=0.0))
    pairs = check_sparsity_kept(before, after, step="x", tolerance=0.02)
    assert [b.layer for b, _ in pairs] == ["conv2"]   # unpruned kernels are not compared
    check_sparsity_kept(before, structure(kernel("conv2", sparsity=0.7)), step="int8")


def test_cqat_that_added_unique_values_fails():
    before = structure(kernel("conv2", unique=8), kernel("dense1", unique=8))
    after = structure(kernel("conv2", unique=8), kernel("dense1", unique=200))
    with pytest.raises(StructureLostError, match=r"'dense1': 200 unique values after vs 8 before"):
        check_clusters_kept(before, after, step="PreservingQAT(cqat)")


def test_tflite_clusters_compared_per_channel():
    # Per-channel int8 scales give a clustered kernel up to 8 values in *each* channel, so more
    # per kernel: that is kept structure, not lost.
    before = structure(kernel("conv2", unique=8, per_channel=8))
    kept = structure(kernel("conv2", unique=17, per_channel=8))
    check_clusters_kept(before, kept, step="TFLiteConverter(int8)", per_channel=True)
    lost = structure(kernel("conv2", unique=200, per_channel=40))
    with pytest.raises(StructureLostError, match="40 unique values per channel"):
        check_clusters_kept(before, lost, step="TFLiteConverter(int8)", per_channel=True)


def test_unclustered_kernels_are_not_checked_for_clusters():
    dense = structure(kernel("conv1", unique=144, size=144), kernel("conv2", unique=900))
    assert not is_clustered(dense) and not clustered_kernels(dense)
    check_clusters_kept(dense, structure(kernel("conv1", unique=255, size=144)), step="x")


def test_classification_of_pruned_and_clustered():
    assert is_pruned(structure(kernel("a", sparsity=0.5)))
    assert not is_pruned(structure(kernel("a", sparsity=0.001)))
    # 8 centroids + zero on a pruned kernel: clustered.
    assert is_clustered(structure(kernel("a", sparsity=0.5, unique=9)))
    # A tiny kernel with few values is not "clustered" just for being small.
    assert not is_clustered(structure(kernel("a", unique=9, size=9)))
