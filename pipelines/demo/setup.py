"""Writes the digits demo into a workdir: the data as tf.Example TFRecords and a pipeline.yaml."""
from __future__ import annotations

import os

import yaml

from collabopt.pipelines.demo.data import DIGITS_SPEC, write_digits_examples

RUN_FN = "collabopt.pipelines.demo.trainer_module.run_fn"


DEMO_MODE = "exhaustive"
# `collabopt demo --mode search`: the candidate levels it chooses from, on the leaves that show
# the search (one template per technique chain).
SEARCH_LEVELS = {"target_sparsity": [0.5, 0.625, 0.75, 0.875], "number_of_clusters": [16, 8, 4]}
SEARCH_LEAVES = ["ptq", "prune>pqat", "cluster>cqat", "prune>cluster>pcqat"]


def demo_config(runner: str = "local", mode: str | None = None) -> dict:
    """The demo's config; every path is relative to the workdir that holds pipeline.yaml."""
    from collabopt.pipelines.config import PipelineConfig

    raw = {
        "pipeline_name": "collabopt-digits",
        "pipeline_root": "pipeline_root",
        "metadata": "metadata.sqlite",
        "serving_dir": "serving",
        "data": {"examples": "data", "feature_key": DIGITS_SPEC.feature_key,
                 "label_key": DIGITS_SPEC.label_key,
                 "feature_shape": list(DIGITS_SPEC.feature_shape)},
        "base_model": {"run_fn": RUN_FN, "train_epochs": 15},
        # Fine-tuning until each step recovers (the training defaults); 75 % sparsity and 8
        # clusters per kernel: where the digits CNN still holds a 1-point accuracy budget
        # (`collabopt demo --mode search` finds it from a list of levels).
        "training": {"batch_size": 32},
        "pruning": {"target_sparsity": 0.75},
        "clustering": {"number_of_clusters": 8},
        "targets": [{"accelerator_config": "ethos-u55-128"},
                    {"accelerator_config": "ethos-u65-256"}],
        "thresholds": {"min_accuracy": 0.9, "max_accuracy_drop": 0.01},
        "objective": "latency",
        "mode": mode or DEMO_MODE,
        "runner": runner,
    }
    if raw["mode"] == "search":
        raw["leaves"] = SEARCH_LEAVES
        raw["pruning"]["target_sparsity"] = SEARCH_LEVELS["target_sparsity"]
        raw["clustering"]["number_of_clusters"] = SEARCH_LEVELS["number_of_clusters"]
    # Round-trip through the schema so the file the user edits shows every key with its default.
    return PipelineConfig.model_validate(raw).model_dump(mode="json")


def write_demo(workdir: str, runner: str = "local", mode: str | None = None) -> str:
    """Writes data/ (unless present) and pipeline.yaml into workdir; returns the config path."""
    os.makedirs(workdir, exist_ok=True)
    data_dir = os.path.join(workdir, "data")
    if not os.path.isdir(data_dir):
        write_digits_examples(data_dir)
    config_path = os.path.join(workdir, "pipeline.yaml")
    with open(config_path, "w") as f:
        f.write("# collabopt demo config: edit and re-run with `collabopt run pipeline.yaml`.\n"
                "# Paths are relative to this file.\n")
        yaml.safe_dump(demo_config(runner, mode), f, sort_keys=False)
    return config_path
