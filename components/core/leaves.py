"""The leaves of the deployment tree (ARCHITECTURE.md): techniques at levels, named by their path.

A *template* names the techniques of a leaf, as the config lists them: `prune>cluster>pcqat`.
A *leaf* is a template with a level for each leveled technique: `prune75>cluster8>pcqat` is
75 % sparsity, then 8 clusters per kernel, then PCQAT. The path of a leaf is also its
`technique_path` artifact property: each step appends its own name, computed here from its
parameters (`prune_step`, `cluster_step`), so the tree builder predicts the names the executors
write. Names stay valid in TFX component ids and KFP task ids once `>` becomes `_` (`leaf_key`).
"""
from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Iterable, Optional, Sequence

BASELINE_LEAF = "ptq"
SEPARATOR = ">"
PRUNE, CLUSTER = "prune", "cluster"
FINAL_STEPS = ("ptq", "qat", "pqat", "cqat", "pcqat")

TEMPLATES: tuple[str, ...] = (
    "ptq", "qat",
    "prune>ptq", "prune>pqat",
    "cluster>ptq", "cluster>cqat",
    "prune>cluster>ptq", "prune>cluster>pcqat",
)
# Kept for readers that think in templates.
LEAVES = TEMPLATES

_LEVELED_STEP = re.compile(r"^(prune|cluster)([0-9][0-9a-z]*)$")


def prune_step(target_sparsity: float, sparsity_m_by_n: Optional[Sequence[int]] = None) -> str:
    """'prune75' for 0.75, 'prune87p5' for 0.875, 'prune2of4' for m_by_n (2, 4)."""
    if sparsity_m_by_n:
        m, n = sparsity_m_by_n
        return f"{PRUNE}{int(m)}of{int(n)}"
    percent = round(float(target_sparsity) * 100, 1)
    text = f"{percent:g}".replace(".", "p")
    return f"{PRUNE}{text}"


def cluster_step(number_of_clusters: int) -> str:
    """'cluster8' for 8 clusters."""
    return f"{CLUSTER}{int(number_of_clusters)}"


def template_of(path: str) -> str:
    """'prune75>cluster8>pcqat' -> 'prune>cluster>pcqat' (templates map to themselves)."""
    return SEPARATOR.join(_LEVELED_STEP.sub(r"\1", step) for step in path.split(SEPARATOR))


def depth(path: str) -> int:
    """How many steps a leaf takes from the base model (progressive mode's level)."""
    return len(path.split(SEPARATOR))


def leaf_key(path: str) -> str:
    """An identifier for a leaf (component ids, input keys): 'prune75>cluster8>pcqat' ->
    'prune75_cluster8_pcqat'."""
    return path.replace(SEPARATOR, "_")


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One leaf: a template at one sparsity (if it prunes) and one cluster count (if it clusters)."""

    template: str
    target_sparsity: Optional[float] = None
    number_of_clusters: Optional[int] = None
    sparsity_m_by_n: Optional[tuple[int, int]] = None

    @property
    def steps(self) -> tuple[str, ...]:
        """The step names along the path, e.g. ('prune75', 'cluster8', 'pcqat')."""
        names = []
        for step in self.template.split(SEPARATOR):
            if step == PRUNE:
                names.append(prune_step(self.target_sparsity, self.sparsity_m_by_n))
            elif step == CLUSTER:
                names.append(cluster_step(self.number_of_clusters))
            else:
                names.append(step)
        return tuple(names)

    @property
    def path(self) -> str:
        return SEPARATOR.join(self.steps)

    @property
    def prefix(self) -> str:
        """The path of the model the leaf quantizes ('' for the base model)."""
        return SEPARATOR.join(self.steps[:-1])

    @property
    def key(self) -> str:
        return leaf_key(self.path)

    @property
    def is_baseline(self) -> bool:
        return self.template == BASELINE_LEAF

    def levels(self) -> dict[str, float | int]:
        """The levels this leaf uses, by TFMOT's parameter name."""
        out: dict[str, float | int] = {}
        if PRUNE in self.template.split(SEPARATOR):
            out["target_sparsity"] = self.target_sparsity
        if CLUSTER in self.template.split(SEPARATOR):
            out["number_of_clusters"] = self.number_of_clusters
        return out


def uses(template: str, technique: str) -> bool:
    return technique in template.split(SEPARATOR)


def expand(templates: Iterable[str], sparsities: Sequence[float], clusters: Sequence[int],
           sparsity_m_by_n: Optional[tuple[int, int]] = None) -> list[Leaf]:
    """Every template at every combination of the levels it uses, in a stable order.

    With `sparsity_m_by_n` the sparsity is the m:n pattern's, so pruning has one level.
    """
    if sparsity_m_by_n:
        sparsities = [sparsities[0] if sparsities else 0.5]
    leaves = []
    for template in templates:
        s_levels = sparsities if uses(template, PRUNE) else [None]
        c_levels = clusters if uses(template, CLUSTER) else [None]
        for s, c in itertools.product(s_levels, c_levels):
            leaves.append(Leaf(template, s, c, sparsity_m_by_n if s is not None else None))
    return leaves


def sort_key(path: str) -> tuple:
    """Template order of TEMPLATES, then increasing compression (sparsity up, clusters down)."""
    template = template_of(path)
    order = TEMPLATES.index(template) if template in TEMPLATES else len(TEMPLATES)
    sparsity, clusters = 0.0, 0
    for step in path.split(SEPARATOR):
        found = _LEVELED_STEP.match(step)
        if found and found.group(1) == PRUNE:
            level = found.group(2)
            sparsity = float(level.replace("p", ".")) if "of" not in level else 0.0
        elif found:
            clusters = int(found.group(2))
    return (order, sparsity, -clusters, path)


__all__ = ["BASELINE_LEAF", "TEMPLATES", "LEAVES", "FINAL_STEPS", "Leaf", "prune_step",
           "cluster_step", "template_of", "depth", "leaf_key", "expand", "uses", "sort_key"]
