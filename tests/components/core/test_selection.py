import pytest

from collabopt.components.core.errors import ConfigError
from collabopt.components.core.selection import LeafMetrics, Objective, misses, select

LEAVES = [
    LeafMetrics("ptq", int8_accuracy=0.96, tflite_bytes=40_000, accuracy_drop=None,
                inference_ms=0.30, flash_bytes=38_000, sram_bytes=9_000),
    LeafMetrics("prune>pqat", int8_accuracy=0.95, tflite_bytes=40_000, accuracy_drop=0.01,
                inference_ms=0.22, flash_bytes=21_000, sram_bytes=9_000),
    LeafMetrics("prune>cluster>pcqat", int8_accuracy=0.91, tflite_bytes=40_000,
                accuracy_drop=0.05, inference_ms=0.20, flash_bytes=15_000, sram_bytes=9_000),
]


def test_latency_objective_picks_fastest_leaf_that_meets_thresholds():
    selection = select(LEAVES, {"max_accuracy_drop": 0.02}, Objective.LATENCY)
    assert selection.selected.path == "prune>pqat"
    assert selection.ranking == ("prune>pqat", "ptq")
    assert "prune>pqat" in selection.explanation


def test_accuracy_objective_prefers_accuracy():
    assert select(LEAVES, {}, "accuracy").selected.path == "ptq"


def test_size_objective_prefers_smallest_flash():
    assert select(LEAVES, {}, "size").selected.path == "prune>cluster>pcqat"


def test_no_leaf_meets_thresholds_reports_closest_and_by_how_much():
    selection = select(LEAVES, {"min_accuracy": 0.99, "max_inference_ms": 0.25}, "latency")
    assert selection.selected is None
    assert selection.closest.path == "prune>pqat"
    (miss,) = selection.closest_misses
    assert miss.threshold == "min_accuracy"
    assert miss.measured == pytest.approx(0.95)
    assert "below min_accuracy=0.99" in selection.explanation


def test_missing_vela_figure_is_a_miss_not_a_pass():
    leaf = LeafMetrics("qat", int8_accuracy=0.97, tflite_bytes=1)
    assert [m.threshold for m in misses(leaf, {"max_inference_ms": 1.0})] == ["max_inference_ms"]


@pytest.mark.parametrize("thresholds, match", [
    ({"min_accuracy": 1.5}, r"min_accuracy=1.5 is out of range; it must be in \[0, 1\]"),
    ({"max_tflite_bytes": 0}, "max_tflite_bytes=0 is out of range"),
    ({"max_latency": 3}, "Unknown threshold 'max_latency'"),
])
def test_impossible_thresholds_are_config_errors(thresholds, match):
    with pytest.raises(ConfigError, match=match):
        select(LEAVES, thresholds)


def test_tolerance_prefers_the_more_accurate_of_two_near_equal_leaves():
    leaves = [
        LeafMetrics("prune75>cluster8>pcqat", int8_accuracy=0.958, tflite_bytes=30_000,
                    accuracy_drop=0.011, inference_ms=0.0990, flash_bytes=9_000),
        LeafMetrics("prune75>cluster16>pcqat", int8_accuracy=0.972, tflite_bytes=30_000,
                    accuracy_drop=0.0, inference_ms=0.1000, flash_bytes=10_000),
        LeafMetrics("ptq", int8_accuracy=0.972, tflite_bytes=40_000, inference_ms=0.2,
                    flash_bytes=38_000),
    ]
    strict = select(leaves, {}, "latency", tolerance=0.0)
    assert strict.selected.path == "prune75>cluster8>pcqat"
    tolerant = select(leaves, {}, "latency", tolerance=0.02)
    assert tolerant.selected.path == "prune75>cluster16>pcqat"
    assert set(tolerant.tied) == {"prune75>cluster8>pcqat", "prune75>cluster16>pcqat"}
    assert "most accurate" in tolerant.explanation and "prune75>cluster8>pcqat" in tolerant.explanation
    assert tolerant.ranking[0] == "prune75>cluster16>pcqat"


def test_leaves_outside_the_tolerance_do_not_tie():
    selection = select(LEAVES, {}, "latency", tolerance=0.05)
    assert selection.selected.path == "prune>cluster>pcqat"   # 0.20 ms; 0.22 is 10 % slower
    assert selection.tied == ("prune>cluster>pcqat",)


def test_failed_leaves_are_never_selected_and_are_named():
    failed = LeafMetrics("qat", int8_accuracy=0.0, tflite_bytes=0,
                         failure="PreservingQAT: layer 'lstm' (LSTM) is not supported")
    selection = select([*LEAVES, failed], {}, "accuracy")
    assert selection.selected.path == "ptq"
    assert "qat" not in selection.ranking
    assert "lstm" in selection.explanation
    nothing = select([failed], {}, "latency")
    assert nothing.selected is None and nothing.closest is None
    assert "No leaf could be built" in nothing.explanation


def test_objective_tolerance_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="objective_tolerance"):
        select(LEAVES, {}, "latency", tolerance=1.5)


def test_arena_threshold_misses_a_leaf_whose_arena_is_larger_and_names_by_how_much():
    leaf = LeafMetrics("ptq", int8_accuracy=0.97, tflite_bytes=1, arena_bytes=6_000)
    (miss,) = misses(leaf, {"max_arena_bytes": 5_000})
    assert miss.threshold == "max_arena_bytes" and miss.measured == 6_000
    assert "arena_bytes 6000 is above max_arena_bytes=5000 by 1000" in miss.describe()
    assert not misses(leaf, {"max_arena_bytes": 6_000})
    with pytest.raises(ConfigError, match="max_arena_bytes=0 is out of range"):
        misses(leaf, {"max_arena_bytes": 0})


def test_each_target_gets_its_own_winner_from_its_own_figures():
    from collabopt.components.core.selection import select_per_target

    def on(target, ms, sram):
        return [LeafMetrics(path, acc, 40_000, drop, ms[path], 20_000, sram[path], target=target)
                for path, acc, drop in (("ptq", 0.96, None), ("prune50>pqat", 0.95, 0.01))]

    chosen = select_per_target({
        "ethos-u55-128": on("ethos-u55-128", {"ptq": 0.30, "prune50>pqat": 0.20},
                            {"ptq": 9_000, "prune50>pqat": 9_000}),
        "ethos-u65-256": on("ethos-u65-256", {"ptq": 0.10, "prune50>pqat": 0.08},
                            {"ptq": 90_000, "prune50>pqat": 300_000}),
    }, {"max_sram_bytes": 100_000}, "latency")
    assert list(chosen) == ["ethos-u55-128", "ethos-u65-256"]
    assert chosen["ethos-u55-128"].selected.path == "prune50>pqat"
    assert chosen["ethos-u65-256"].selected.path == "ptq"
    assert "sram_bytes" not in chosen["ethos-u55-128"].explanation


def test_targets_on_one_accelerator_are_told_apart_by_their_options():
    from collabopt.components.core.vela import VelaOptions, target_names

    assert target_names([VelaOptions("ethos-u55-128"), VelaOptions("ethos-u65-256")]) == [
        "ethos-u55-128", "ethos-u65-256"]
    assert target_names([VelaOptions("ethos-u55-128"),
                         VelaOptions("ethos-u55-128", optimise="Size")]) == [
        "ethos-u55-128/Performance", "ethos-u55-128/Size"]
    assert target_names([VelaOptions("ethos-u55-128")] * 2) == ["ethos-u55-128#0",
                                                                 "ethos-u55-128#1"]
