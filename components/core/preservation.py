"""Did a step keep the structure its input had? Pure checks on WeightStructure records.

Every step of a collaborative-optimization path measures its output's weights (core.metrics) and
compares them here with what its input had: PQAT / PCQAT must keep the zeros of a pruned model,
CQAT / PCQAT must not add unique values to a clustered model, the int8 `.tflite` must keep both.
A violation raises StructureLostError naming the layer, the measured numbers and the way out.

Kernels of two records are matched by layer name (TFMOT's wrapper prefixes such as `quant_` and
`prune_low_magnitude_` and TFLite's `model/layer/Conv2D` tensor paths are understood), then by
size in order for whatever names could not match.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from collabopt.components.core.errors import StructureLostError, TrainingDivergedError

if TYPE_CHECKING:  # metrics imports TensorFlow; these checks only read the records' fields.
    from collabopt.components.core.metrics import KernelStats, WeightStructure

# A kernel counts as pruned when at least this fraction of it is exactly zero (a trained float
# kernel has practically none), and as clustered when its non-zero values are at most this many
# and each value is shared by at least MIN_WEIGHTS_PER_VALUE weights (as core.qat.resolve_mode
# decides; 256 would be too loose, int8 quantization alone leaves <= 256 values).
MIN_PRUNED_SPARSITY = 0.05
MAX_CLUSTERED_UNIQUE = 64
MIN_WEIGHTS_PER_VALUE = 4
DEFAULT_SPARSITY_TOLERANCE = 0.02

_WRAPPER_PREFIXES = ("prune_low_magnitude_", "cluster_", "quant_")
_TOKEN_SPLIT = re.compile(r"[/;:]")


def _normalize(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                name = name[len(prefix):]
                changed = True
    return name


def _tokens(name: str) -> set[str]:
    return {_normalize(t) for t in _TOKEN_SPLIT.split(name) if t}


def match_kernels(before: "WeightStructure", after: "WeightStructure"
                  ) -> list[tuple["KernelStats", "KernelStats"]]:
    """Pairs (kernel before, same kernel after); kernels without a counterpart are left out."""
    pairs: list[tuple[KernelStats, KernelStats]] = []
    remaining = list(after.kernels)
    unmatched: list[KernelStats] = []
    for b in before.kernels:
        name = _normalize(b.layer)
        exact = [a for a in remaining if _normalize(a.layer) == name]
        if exact:
            pairs.append((b, exact[0]))
            remaining.remove(exact[0])
        else:
            unmatched.append(b)
    still: list[KernelStats] = []
    for b in unmatched:
        name = _normalize(b.layer)
        by_token = [a for a in remaining if name in _tokens(a.layer)]
        by_token.sort(key=lambda a: a.size != b.size)
        if by_token:
            pairs.append((b, by_token[0]))
            remaining.remove(by_token[0])
        else:
            still.append(b)
    for b in still:
        same_size = [a for a in remaining if a.size == b.size]
        if same_size:
            pairs.append((b, same_size[0]))
            remaining.remove(same_size[0])
    order = {id(k): i for i, k in enumerate(before.kernels)}
    return sorted(pairs, key=lambda p: order[id(p[0])])


def pruned_kernels(structure: "WeightStructure",
                   min_sparsity: float = MIN_PRUNED_SPARSITY) -> list["KernelStats"]:
    """Kernels with at least `min_sparsity` exact zeros."""
    return [k for k in structure.kernels if k.sparsity >= min_sparsity]


def clustered_kernels(structure: "WeightStructure",
                      max_unique: int = MAX_CLUSTERED_UNIQUE) -> list["KernelStats"]:
    """Kernels with few unique values: at most `max_unique` besides zero, each shared by at
    least MIN_WEIGHTS_PER_VALUE weights."""
    def nonzero_unique(k: "KernelStats") -> int:
        return k.unique_values - (1 if k.sparsity > 0 else 0)

    return [k for k in structure.kernels
            if nonzero_unique(k) <= max_unique
            and k.unique_values * MIN_WEIGHTS_PER_VALUE <= k.size]


def is_pruned(structure: "WeightStructure") -> bool:
    return bool(pruned_kernels(structure))


def is_clustered(structure: "WeightStructure") -> bool:
    return bool(clustered_kernels(structure))


def check_sparsity_kept(before: "WeightStructure", after: "WeightStructure", *, step: str,
                        tolerance: float = DEFAULT_SPARSITY_TOLERANCE,
                        min_sparsity: float = MIN_PRUNED_SPARSITY,
                        hint: str = "") -> list[tuple["KernelStats", "KernelStats"]]:
    """Every pruned kernel of `before` is at most `tolerance` less sparse in `after`.

    Returns the compared pairs. Raises StructureLostError naming the layer(s) otherwise.
    """
    pairs = [(b, a) for b, a in match_kernels(before, after) if b.sparsity >= min_sparsity]
    lost = [(b, a) for b, a in pairs if a.sparsity < b.sparsity - tolerance]
    if lost:
        details = "; ".join(
            f"layer '{b.layer}': sparsity {a.sparsity:.3f} after vs {b.sparsity:.3f} before"
            for b, a in lost)
        raise StructureLostError(
            f"{step} lost the sparsity of its input beyond the tolerance of {tolerance:.3f}: "
            f"{details}. {hint or _SPARSITY_HINT}")
    return pairs


def check_clusters_kept(before: "WeightStructure", after: "WeightStructure", *, step: str,
                        per_channel: bool = False, slack: int = 0,
                        max_unique: int = MAX_CLUSTERED_UNIQUE,
                        hint: str = "") -> list[tuple["KernelStats", "KernelStats"]]:
    """No clustered kernel of `before` has more unique values in `after` (plus `slack`).

    per_channel compares `max_unique_per_channel` (use it for int8 `.tflite` weights: per-channel
    scales map one centroid to a different int8 value in every output channel).
    """
    clustered = {id(k) for k in clustered_kernels(before, max_unique)}
    pairs = [(b, a) for b, a in match_kernels(before, after) if id(b) in clustered]

    def count(k: "KernelStats") -> int:
        return k.max_unique_per_channel if per_channel else k.unique_values

    lost = [(b, a) for b, a in pairs if count(a) > count(b) + slack]
    if lost:
        what = "unique values per channel" if per_channel else "unique values"
        details = "; ".join(
            f"layer '{b.layer}': {count(a)} {what} after vs {count(b)} before" for b, a in lost)
        raise StructureLostError(
            f"{step} destroyed the weight clusters of its input: {details}. "
            f"{hint or _CLUSTER_HINT}")
    return pairs


def check_finite_weights(model, *, step: str) -> None:
    """Raises TrainingDivergedError when fine-tuning left NaN or infinite weights in `model`."""
    bad = sorted({w.name.split("/")[0] for w in model.weights
                  if np.issubdtype(np.asarray(w).dtype, np.floating)
                  and not np.all(np.isfinite(np.asarray(w)))})
    if bad:
        raise TrainingDivergedError(
            f"{step}: fine-tuning diverged, the weights of {', '.join(repr(b) for b in bad)} are "
            "NaN or infinite. Lower training.learning_rate (e.g. by 10x) and run again.")


_SPARSITY_HINT = (
    "Likely cause: the step fine-tuned the weights without the pruning masks (plain QAT or "
    "clustering without preserve_sparsity on a pruned model). Fix: use PreservingQAT with "
    "mode='pqat' (or 'pcqat' after clustering), SparseClusterer with preserve_sparsity=True, "
    "or a lower learning_rate / fewer epochs.")
_CLUSTER_HINT = (
    "Likely cause: the step trained the weights freely instead of only the centroids (plain QAT "
    "on a clustered model) or the int8 conversion re-quantized them. Fix: use PreservingQAT with "
    "mode='cqat' (or 'pcqat' for a pruned and clustered model).")

__all__ = [
    "match_kernels", "pruned_kernels", "clustered_kernels", "is_pruned", "is_clustered",
    "check_sparsity_kept", "check_clusters_kept", "check_finite_weights",
    "MIN_PRUNED_SPARSITY", "MAX_CLUSTERED_UNIQUE", "DEFAULT_SPARSITY_TOLERANCE",
]
