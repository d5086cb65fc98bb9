"""The level search's decisions (pure logic): bisection per technique, then the staircase of
pairs; outcomes come from a monotone accuracy model standing in for trained leaves."""
from __future__ import annotations

import itertools

from collabopt.components.core.leaves import TEMPLATES, expand
from collabopt.components.core.selection import Thresholds
from collabopt.pipelines.search import Outcome, run_search

SPARSITIES = [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9]
CLUSTERS = [32, 16, 12, 8, 6, 4]


def accuracy_model(s_limit: float, c_limit: int, both_penalty: float = 0.0):
    """Accuracy 0.97 within the limits, 0.80 beyond; pruning+clustering loses `both_penalty`."""
    def accuracy(leaf) -> float:
        s, c = leaf.target_sparsity, leaf.number_of_clusters
        ok = (s is None or s <= s_limit) and (c is None or c >= c_limit)
        acc = 0.97 if ok else 0.80
        if s is not None and c is not None and s >= s_limit and c <= c_limit:
            acc -= both_penalty
        return acc
    return accuracy


def latency_model(leaf) -> float:
    """A monotone objective: less sparsity and more clusters are slower."""
    sparsity = leaf.target_sparsity or 0.0
    clusters = leaf.number_of_clusters or 32
    return (1 - sparsity) * 10 + clusters / 8


def run(accuracy, thresholds=Thresholds(max_accuracy_drop=0.01), objective=None,
        objective_tolerance=None):
    leaves = expand(TEMPLATES, SPARSITIES, CLUSTERS)
    trained = []

    def run_round(round_leaves, trace, final):
        trained.append([l.path for l in round_leaves])
        return {l.path: Outcome(l.path, accuracy(l), None if l.is_baseline else 0.97 - accuracy(l),
                                objective=objective and objective(l))
                for l in round_leaves}

    trace = run_search(leaves, thresholds, run_round, objective_tolerance=objective_tolerance)
    return leaves, trained, trace


def test_search_finds_the_edge_of_each_axis_and_the_corner():
    leaves, rounds, trace = run(accuracy_model(0.8, 8))
    tried = set(rounds[-1])
    assert "prune80>pqat" in tried and "prune85>pqat" in tried
    assert "cluster8>cqat" in tried and "cluster6>cqat" in tried
    assert "prune80>cluster8>pcqat" in tried
    assert not any(p.startswith("prune90>cluster") or p.endswith("cluster4>pcqat") for p in tried)
    assert len(tried) <= 0.5 * len(leaves)
    assert any("0.8 held and 0.85 failed" in s for s in trace["stopped"])
    assert any("8 held and 6 failed" in s for s in trace["stopped"])


def test_search_stops_raising_the_level_once_the_budget_fails():
    _, rounds, trace = run(accuracy_model(0.5, 32))
    tried = set(rounds[-1])
    sparsity_trials = [t for t in trace["trials"] if t["axis"] == "sparsity"]
    assert not sparsity_trials[-1]["held"] or sparsity_trials[-1]["levels"]["target_sparsity"] == 0.5
    assert all("prune9" not in p for p in tried)
    failed = [t for t in trace["trials"] if not t["held"] and t["axis"] == "sparsity"]
    assert failed and "accuracy_drop" in failed[0]["why"]


def test_pairs_step_back_when_the_corner_fails():
    _, rounds, trace = run(accuracy_model(0.8, 8, both_penalty=0.05))
    both = [t for t in trace["trials"] if t["axis"] == "both"]
    corner = both[0]
    assert corner["levels"] == {"target_sparsity": 0.8, "number_of_clusters": 8} and not corner["held"]
    later = {(t["levels"]["target_sparsity"], t["levels"]["number_of_clusters"]): t["held"]
             for t in both[1:]}
    assert later.get((0.75, 8)) is True and later.get((0.8, 12)) is True
    # Nothing more compressed than a failed pair, nothing implied by a held pair, is trained.
    assert len(both) == 3


def test_nothing_holds_ends_with_reasons_and_no_pairs():
    _, rounds, trace = run(lambda leaf: 0.97 if leaf.target_sparsity is None
                           and leaf.number_of_clusters is None else 0.5)
    assert any("even the least compressed" in s for s in trace["stopped"])
    assert not [t for t in trace["trials"] if t["axis"] == "both"]


def test_every_round_keeps_the_baseline_first_and_grows():
    _, rounds, _ = run(accuracy_model(0.8, 8))
    assert all(r[0] == "ptq" for r in rounds)
    for earlier, later in itertools.pairwise(rounds):
        assert set(earlier) <= set(later)


def _pairs_hold_up_to(s_limit: float, c_limit: int):
    """Alone: up to 0.8 sparsity or down to 6 clusters; together: only up to (s_limit, c_limit)."""
    def accuracy(leaf) -> float:
        s, c = leaf.target_sparsity, leaf.number_of_clusters
        if s is not None and c is not None:
            return 0.97 if s <= s_limit and c >= c_limit else 0.80
        return 0.97 if (s is None or s <= 0.8) and (c is None or c >= 6) else 0.80
    return accuracy


def test_pairs_that_cannot_beat_the_best_held_objective_are_not_trained():
    accuracy = _pairs_hold_up_to(0.75, 8)
    _, rounds, trace = run(accuracy, objective=latency_model, objective_tolerance=0.02)
    tried = set(rounds[-1])
    both = {(t["levels"]["target_sparsity"], t["levels"]["number_of_clusters"]): t["held"]
            for t in trace["trials"] if t["axis"] == "both"}
    assert both[(0.75, 8)] is True          # the best pair is still found...
    # ...and (0.6, 6), whose latency is at best that of the failed (0.7, 6), 3.75 against 3.5
    # held, is not trained, nor (0.5, 6) below it, nor (0.8, 32) beyond the failed (0.8, 16).
    assert "prune60>cluster6>pcqat" not in tried and "prune50>cluster6>pcqat" not in tried
    assert "prune80>cluster32>pcqat" not in tried
    assert any("(0.6, 6) not trained" in s and "prune75>cluster8>" in s
               for s in trace["stopped"])
    # Without an objective bound (objective: accuracy) the staircase is walked to its end.
    _, unbounded, plain = run(accuracy)
    assert {"prune60>cluster6>pcqat", "prune50>cluster6>pcqat"} <= set(unbounded[-1])
    assert not any("not trained" in s for s in plain["stopped"])
    # A tolerance wide enough to tie them trains them again.
    _, wide, _ = run(accuracy, objective=latency_model, objective_tolerance=0.5)
    assert "prune60>cluster6>pcqat" in wide[-1]
