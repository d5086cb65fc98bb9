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
