"""Same input, same result: the small config run again in a fresh store gives the same leaves.

Every fine-tuning step is seeded (`training.seed`, default 0), so the second run trains the same
models. Stated tolerance: int8 accuracy within one eval example, sizes and Vela figures within
1 % (TensorFlow's CPU kernels may sum in a different order across threads).
"""
from __future__ import annotations

import pytest

from collabopt.pipelines import runners
from collabopt.pipelines.config import load_config
from collabopt.pipelines.metadata.read import read_leaves
from tests.pipelines.conftest import write_small_config

pytestmark = pytest.mark.e2e
DIGITS_EVAL_EXAMPLES = 359


def test_same_config_and_seed_give_the_same_leaf_metrics(small_run, tmp_path):
    config = load_config(write_small_config(str(tmp_path)))
    result = runners.run(config)
    first = {r.path: r for r in read_leaves(small_run.metadata, run_id=small_run.first_run_id)}
    second = {r.path: r for r in read_leaves(config.metadata, run_id=result.run_id)}
    assert set(first) == set(second)
    for path, a in first.items():
        b = second[path]
        assert abs(a.int8_accuracy - b.int8_accuracy) <= 1 / DIGITS_EVAL_EXAMPLES + 1e-9, path
        assert b.gzip_bytes == pytest.approx(a.gzip_bytes, rel=0.01), path
        assert b.sparsity == pytest.approx(a.sparsity, abs=0.01), path
        assert b.vela[0]["inference_ms"] == pytest.approx(a.vela[0]["inference_ms"], rel=0.01)
    assert [p for p, r in first.items() if r.selected] == [p for p, r in second.items()
                                                           if r.selected]
