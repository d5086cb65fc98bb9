"""`mode: search`: the most compressed levels that meet the accuracy budget, without the grid.

The candidate levels are the config's lists (`pruning.target_sparsity`, ordered from least to
most sparse, and `clustering.number_of_clusters`, from most to fewest clusters). The search
assumes what the collaborative-optimization guides observe: more compression never *raises*
accuracy (nor latency or size), so the levels that hold the accuracy budget form a staircase,
and it probes only enough of it to find the staircase's edge:

1. *One technique at a time.* The leaves that prune only (`prune>ptq`, `prune>pqat`) search the
   sparsity axis by bisection, the leaves that cluster only search the cluster axis, at the
   same time: a level *holds* when any of its leaves meets the accuracy thresholds
   (`min_accuracy`, `max_accuracy_drop`). Each axis stops between the last level that held and
   the first that failed.
2. *Both together.* The leaves that prune then cluster start at the most compressed pair the
   single axes allow (the sparsity and cluster count that held alone). When a pair fails, the
   next round tries the pairs one step back from it (less sparse, or more clusters). A pair more
   compressed than one that failed, or less than one that held, is never trained.
3. *Only pairs that can still win.* By the same assumption a pair's objective (latency or size)
   is at best that of a measured pair more compressed than it. A pair whose best possible value
   lies more than `objective_tolerance` above the best leaf that held cannot be selected, so it
   is not trained (the trace says so); nor is any pair less compressed than it.

Size and latency thresholds do not steer the search (more compression only helps them); the
final Selector judges every leaf tried against all thresholds and the objective. Every probe is
a round: an ordinary TFX pipeline run whose steps are cached from earlier rounds, so each trial
is in ML Metadata; the last round's Selector records the whole trace (`search_trace`): every
level tried, its result and why each axis stopped. Only that round pushes a model.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Callable, Iterable, Optional, Sequence

from collabopt.components.core.leaves import CLUSTER, PRUNE, Leaf, uses
from collabopt.components.core.selection import LeafMetrics, Thresholds, misses, within_tolerance

ACCURACY_THRESHOLDS = ("min_accuracy", "max_accuracy_drop")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a round measured on one leaf."""

    path: str
    int8_accuracy: Optional[float]
    accuracy_drop: Optional[float]
    failure: Optional[str] = None
    objective: Optional[float] = None  # the objective's figure (lower is better), if measured


@dataclasses.dataclass
class Trial:
    round: int
    axis: str                    # "sparsity", "clusters" or "both"
    levels: dict                 # {"target_sparsity": .., "number_of_clusters": ..}
    leaves: list[str]
    held: bool
    why: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Axis:
    """Bisection over candidate levels ordered from least to most compressed."""

    name: str
    levels: list
    lo: int = -1          # index of the most compressed level known to hold
    hi: int = -1          # index of the least compressed level known to fail (len: none)

    def __post_init__(self):
        self.hi = len(self.levels)

    @property
    def done(self) -> bool:
        return self.hi - self.lo <= 1

    def next_probe(self) -> int:
        return (self.lo + self.hi) // 2

    def record(self, index: int, held: bool) -> None:
        if held:
            self.lo = max(self.lo, index)
        else:
            self.hi = min(self.hi, index)

    def stop_reason(self) -> str:
        if self.lo == len(self.levels) - 1:
            return (f"{self.name}: the most compressed candidate {self.levels[self.lo]!r} held; "
                    "add more compressed levels to go further")
        if self.lo < 0:
            return (f"{self.name}: even the least compressed candidate {self.levels[0]!r} "
                    "failed the accuracy budget")
        return (f"{self.name}: {self.levels[self.lo]!r} held and {self.levels[self.hi]!r} "
                "failed; no candidate lies between them")


class Search:
    """Decides each round's leaves from the outcomes of the earlier rounds (pure logic)."""

    def __init__(self, leaves: Sequence[Leaf], thresholds: Thresholds,
                 objective_tolerance: Optional[float] = None):
        """`objective_tolerance` None: pairs are not skipped by their objective (the objective
        is accuracy, or the outcomes carry no objective figure)."""
        self.all_leaves = list(leaves)
        self.objective_tolerance = objective_tolerance
        self.thresholds = Thresholds(**{k: v for k, v in thresholds.as_dict().items()
                                        if k in ACCURACY_THRESHOLDS})
        sparsities = sorted({l.target_sparsity for l in leaves if l.target_sparsity is not None})
        clusters = sorted({l.number_of_clusters for l in leaves
                           if l.number_of_clusters is not None}, reverse=True)
        self.sparsity = _Axis("sparsity", sparsities)
        self.clusters = _Axis("clusters", clusters)
        self.fixed = [l for l in leaves if not (uses(l.template, PRUNE) or uses(l.template, CLUSTER))]
        self.prune_only = [l for l in leaves if uses(l.template, PRUNE) and not uses(l.template, CLUSTER)]
        self.cluster_only = [l for l in leaves if uses(l.template, CLUSTER) and not uses(l.template, PRUNE)]
        self.both = [l for l in leaves if uses(l.template, PRUNE) and uses(l.template, CLUSTER)]
        if not self.prune_only:
            self.sparsity.lo, self.sparsity.hi = len(sparsities) - 1, len(sparsities)
        if not self.cluster_only:
            self.clusters.lo, self.clusters.hi = len(clusters) - 1, len(clusters)
        self.held_pairs: set[tuple[int, int]] = set()
        self.failed_pairs: set[tuple[int, int]] = set()
        self.pair_objective: dict[tuple[int, int], float] = {}
        self.best_held: Optional[tuple[float, str]] = None      # (objective, leaf path)
        self.skipped: dict[tuple[int, int], str] = {}            # pair -> why it was not trained
        self.trials: list[Trial] = []
        self.tried: list[Leaf] = []
        self.stopped: list[str] = []
        self.round = 0
        self._pending: list[tuple[str, object, list[Leaf]]] = []

    # --- planning ------------------------------------------------------------------------------
    def _at(self, leaves: Iterable[Leaf], s=None, c=None) -> list[Leaf]:
        return [l for l in leaves
                if (s is None or l.target_sparsity == s) and (c is None or l.number_of_clusters == c)]

    def _pair_state(self, i: int, j: int) -> Optional[bool]:
        if any(i <= hi and j <= hj for hi, hj in self.held_pairs):
            return True
        if any(i >= fi and j >= fj for fi, fj in self.failed_pairs):
            return False
        return None

    def _box(self) -> tuple[int, int]:
        """The most compressed (sparsity, cluster) indices the single-technique searches allow."""
        i_max = self.sparsity.lo if self.prune_only else len(self.sparsity.levels) - 1
        j_max = self.clusters.lo if self.cluster_only else len(self.clusters.levels) - 1
        return i_max, j_max

    def _next_pairs(self) -> list[tuple[int, int]]:
        """The most compressed pairs whose outcome is not implied yet: each more compressed
        neighbour is outside the box or known to fail. The first round probes the corner; each
        failure opens the pairs one step back from it."""
        if not self.both:
            return []
        i_max, j_max = self._box()

        def failed_or_outside(i: int, j: int) -> bool:
            return i > i_max or j > j_max or self._pair_state(i, j) is False

        pairs = [(i, j) for i in range(i_max + 1) for j in range(j_max + 1)
                 if self._pair_state(i, j) is None and not self._below_skipped(i, j)
                 and failed_or_outside(i + 1, j) and failed_or_outside(i, j + 1)]
        return [pair for pair in pairs if not self._skip_if_it_cannot_win(pair)]

    def _below_skipped(self, i: int, j: int) -> bool:
        return any(i <= si and j <= sj for si, sj in self.skipped)

    def _skip_if_it_cannot_win(self, pair: tuple[int, int]) -> bool:
        """True (and the reason recorded) when the pair's best possible objective, that of the
        worst measured pair more compressed than it, is beyond the tolerance of the best leaf
        that held: the Selector could not choose it."""
        if self.objective_tolerance is None or self.best_held is None:
            return False
        i, j = pair
        bounds = [(value, other) for other, value in self.pair_objective.items()
                  if other[0] >= i and other[1] >= j]
        if not bounds:
            return False
        bound, (bi, bj) = max(bounds)
        best, best_path = self.best_held
        if within_tolerance(bound, best, self.objective_tolerance):
            return False
        self.skipped[pair] = (
            f"({self.sparsity.levels[i]}, {self.clusters.levels[j]}) not trained: its objective "
            f"is at best {bound:.6g}, that of the more compressed ({self.sparsity.levels[bi]}, "
            f"{self.clusters.levels[bj]}), more than {self.objective_tolerance:.0%} above "
            f"{best_path} ({best:.6g}), the best leaf that held")
        return True

    def plan(self) -> list[Leaf]:
        """The leaves of the next round (new probes only); empty when the search is over."""
        self.round += 1
        self._pending = []
        if self.round == 1 and self.fixed:
            self._pending.append(("fixed", None, self.fixed))
        if not self.sparsity.done:
            index = self.sparsity.next_probe()
            self._pending.append(("sparsity", index,
                                  self._at(self.prune_only, s=self.sparsity.levels[index])))
        if not self.clusters.done:
            index = self.clusters.next_probe()
            self._pending.append(("clusters", index,
                                  self._at(self.cluster_only, c=self.clusters.levels[index])))
        if self.sparsity.done and self.clusters.done:
            for i, j in self._next_pairs():
                self._pending.append(("both", (i, j), self._at(
                    self.both, s=self.sparsity.levels[i], c=self.clusters.levels[j])))
        new = [leaf for _, _, leaves in self._pending for leaf in leaves]
        self.tried += new
        if not new:
            self._finish()
        return new

    # --- results -------------------------------------------------------------------------------
    def _holds(self, outcomes: dict[str, Outcome], leaves: list[Leaf]) -> tuple[bool, str]:
        """Whether any of `leaves` met the accuracy thresholds, and each one's verdict; notes
        the best objective among the leaves that held."""
        verdicts = []
        for leaf in leaves:
            o = outcomes.get(leaf.path)
            if o is None or o.failure:
                verdicts.append((False, f"{leaf.path} failed to build"
                                 + (f": {o.failure}" if o and o.failure else "")))
                continue
            metrics = LeafMetrics(leaf.path, o.int8_accuracy or 0.0, 0,
                                  accuracy_drop=(math.nan if o.accuracy_drop is None
                                                 and not leaf.is_baseline else o.accuracy_drop))
            missed = misses(metrics, self.thresholds)
            if not missed and o.objective is not None and (
                    self.best_held is None or o.objective < self.best_held[0]):
                self.best_held = (o.objective, leaf.path)
            verdicts.append((not missed, f"{leaf.path} " + (
                f"held (accuracy {o.int8_accuracy:.4f})" if not missed
                else "; ".join(m.describe() for m in missed))))
        held = any(ok for ok, _ in verdicts)
        return held, "; ".join(text for _, text in verdicts)

    def record(self, outcomes: dict[str, Outcome]) -> None:
        for axis, where, leaves in self._pending:
            held, why = self._holds(outcomes, leaves)
            if axis == "sparsity":
                self.sparsity.record(where, held)
                levels = {"target_sparsity": self.sparsity.levels[where]}
            elif axis == "clusters":
                self.clusters.record(where, held)
                levels = {"number_of_clusters": self.clusters.levels[where]}
            elif axis == "both":
                (self.held_pairs if held else self.failed_pairs).add(where)
                measured = [outcomes[l.path].objective for l in leaves
                            if l.path in outcomes and outcomes[l.path].objective is not None]
                if measured:
                    self.pair_objective[where] = min(measured)
                levels = {"target_sparsity": self.sparsity.levels[where[0]],
                          "number_of_clusters": self.clusters.levels[where[1]]}
            else:
                levels = {}
            self.trials.append(Trial(self.round, axis, levels, [l.path for l in leaves],
                                     held, why))

    def _finish(self) -> None:
        if self.prune_only:
            self.stopped.append(self.sparsity.stop_reason())
        if self.cluster_only:
            self.stopped.append(self.clusters.stop_reason())
        if self.both:
            held = sorted(self.held_pairs)
            if held:
                best = ", ".join(f"({self.sparsity.levels[i]}, {self.clusters.levels[j]})"
                                 for i, j in held)
                self.stopped.append(
                    f"both: the pairs (sparsity, clusters) {best} held; every more compressed "
                    "pair failed or lies beyond a level that failed alone")
            else:
                self.stopped.append("both: no (sparsity, clusters) pair held the accuracy budget")
            self.stopped += [f"both: {why}" for why in self.skipped.values()]

    def trace(self) -> dict:
        grid = len(self.all_leaves)
        return {"rounds": self.round, "leaves_tried": len(self.tried), "grid_leaves": grid,
                "thresholds": self.thresholds.as_dict(),
                "trials": [t.to_json() for t in self.trials], "stopped": self.stopped}


def run_search(leaves: Sequence[Leaf], thresholds: Thresholds,
               run_round: Callable[[list[Leaf], Optional[str], bool], dict[str, Outcome]],
               max_rounds: int = 50, objective_tolerance: Optional[float] = None) -> dict:
    """Runs rounds until the search is over, then a last round that records the trace and pushes.

    `run_round(leaves, trace_json, final)` builds and runs the pipeline of those leaves (all
    leaves tried so far: earlier ones are cache hits) and returns the outcome of every leaf.
    """
    search = Search(leaves, thresholds, objective_tolerance)
    baseline = [l for l in leaves if l.is_baseline]
    for _ in range(max_rounds):
        new = search.plan()
        if not new:
            break
        outcomes = run_round(_with_baseline(baseline, search.tried), None, False)
        search.record(outcomes)
    trace = search.trace()
    run_round(_with_baseline(baseline, search.tried), json.dumps(trace, sort_keys=True), True)
    return trace


def _with_baseline(baseline: list[Leaf], tried: list[Leaf]) -> list[Leaf]:
    return baseline + [l for l in tried if l not in baseline]
