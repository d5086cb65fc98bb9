"""One small real run of the deployment tree, shared by the lineage and report tests.

The demo config cut down to two leaves (the ptq baseline and prune>cluster>pcqat), one Ethos-U
target, one fine-tuning epoch and a 3-epoch base model. The pipeline runs twice: the second run is
all cache hits, so the tests read a store where every artifact of the latest run was produced by
an earlier run (TFX records CACHED executions whose outputs are the first run's artifacts).
"""
from __future__ import annotations

import dataclasses

import pytest
import yaml

SMALL_LEAVES = ["ptq", "prune>cluster>pcqat"]
TARGET = "ethos-u55-128"


@dataclasses.dataclass
class SmallRun:
    workdir: str
    config_path: str
    metadata: str
    pipeline_root: str
    first_run_id: str


def write_small_config(workdir: str) -> str:
    from collabopt.pipelines.demo.setup import write_demo

    config_path = write_demo(workdir)
    with open(config_path) as f:
        raw = yaml.safe_load(f)
    raw["leaves"] = list(SMALL_LEAVES)
    raw["targets"] = [{"accelerator_config": TARGET}]
    raw["training"]["epochs"] = 1
    raw["pruning"]["target_sparsity"] = 0.5
    raw["clustering"]["number_of_clusters"] = 16
    raw["base_model"]["train_epochs"] = 3
    # Loose thresholds and the size objective: the pcqat leaf (Vela compresses its sparse,
    # clustered weights) is the likely choice; the tests also hold when the baseline wins.
    raw["thresholds"] = {"min_accuracy": 0.2}
    raw["objective"] = "size"
    with open(config_path, "w") as f:
        yaml.safe_dump(raw, f, sort_keys=False)
    return config_path


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> SmallRun:
    from collabopt.pipelines import runners
    from collabopt.pipelines.config import load_config

    workdir = str(tmp_path_factory.mktemp("small-run"))
    config_path = write_small_config(workdir)
    config = load_config(config_path)
    first_run_id = runners.run(config).run_id
    runners.run(config)  # every node a cache hit
    return SmallRun(workdir, config_path, config.metadata, config.pipeline_root, first_run_id)


@pytest.fixture(scope="session")
def saved_digits_inputs(tmp_path_factory, trained_digits_model):
    """The digits Examples and the trained base model saved as tf_keras does, for configs that
    point a run at them."""
    from collabopt.components.core.keras_compat import keras
    from collabopt.pipelines.demo.data import write_digits_examples

    root = tmp_path_factory.mktemp("saved-digits-inputs")
    write_digits_examples(str(root / "data"))
    model = keras.models.clone_model(trained_digits_model)
    model.set_weights(trained_digits_model.get_weights())
    model.save(str(root / "base_model"))
    return root
