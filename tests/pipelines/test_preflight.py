"""Pre-flight (`collabopt check`): from the config, the data and the base model, without
training — which leaves build, what each technique skips or refuses, Vela's CPU operators, the
fine-tuning steps; data and model mistakes as one clear error."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from collabopt.components.core.errors import DatasetError, ModelDataMismatchError
from collabopt.components.core.keras_compat import keras
from collabopt.components.core.leaves import BASELINE_LEAF, Leaf, template_of
from collabopt.pipelines.config import load_config
from collabopt.pipelines.preflight import fine_tuning_steps, preflight

TARGET = "ethos-u55-128"


def _techniques(leaf: str) -> list[str]:
    return template_of(leaf).split(">")


def _config(tmp_path, data_config: dict, base_model: dict, **overrides) -> str:
    from collabopt.pipelines.demo.setup import demo_config

    raw = demo_config()
    raw.update(data={**raw["data"], **data_config}, base_model=base_model,
               targets=[{"accelerator_config": TARGET}], **overrides)
    path = os.path.join(tmp_path, "pipeline.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return path


@pytest.fixture(scope="module")
def cnn_1d(tmp_path_factory):
    """The issue's 1-D CNN (Conv1D, MaxPooling1D, Flatten, Dense) and its signals, written."""
    from collabopt.pipelines import zoo

    return zoo.write_workload("cnn_1d", str(tmp_path_factory.mktemp("cnn_1d")), epochs=2)


def _cnn_1d_config(tmp_path, workload, **overrides) -> str:
    """Fine-tuning until recovered (the training defaults)."""
    return _config(tmp_path, workload.data_config(), {"path": workload.model_path},
                   training={}, **overrides)


def test_fine_tuning_steps_count_shared_prefixes_once():
    leaves = [Leaf("ptq"), Leaf("prune>cluster>pcqat", 0.75, 8), Leaf("prune>cluster>ptq", 0.75, 8),
              Leaf("prune>pqat", 0.75), Leaf("prune>ptq", 0.5), Leaf("cluster>cqat", None, 8)]
    assert fine_tuning_steps(leaves) == ["prune75", "prune75>cluster8",
                                         "prune75>cluster8>pcqat", "prune75>pqat", "prune50",
                                         "cluster8", "cluster8>cqat"]


def test_every_leaf_of_a_1d_cnn_builds_and_runs_on_the_npu(tmp_path, cnn_1d):
    config = load_config(_cnn_1d_config(tmp_path, cnn_1d))
    report = preflight(config, convert_qat=True)
    assert report.qat_converted
    assert [leaf.path for leaf in report.leaves] == [leaf.path for leaf in config.all_leaves()]
    assert all(leaf.builds for leaf in report.leaves), [l.reason for l in report.leaves]
    assert [s.name for s in report.splits] == ["train", "eval"]
    assert report.splits[1].examples == 400 and report.splits[0].labels == list(range(8))
    (target,) = report.targets
    assert target.accelerator_config == TARGET and target.cpu_ops == 0 and target.npu_ops > 0
    assert report.fine_tuning_steps == len(fine_tuning_steps(config.all_leaves()))
    assert config.training.epochs is None
    assert report.max_fine_tuning_epochs == report.fine_tuning_steps * config.training.max_epochs
    for technique in report.techniques.values():
        assert {"conv1", "conv2", "dense1", "logits"} <= set(technique.wrapped), technique.name
    assert json.loads(json.dumps(report.to_json()))["leaves"][0]["builds"] is True


@keras.utils.register_keras_serializable(package="collabopt_tests")
class _Scale(keras.layers.Layer):
    """A custom layer with a weight that TFMOT knows nothing about."""

    def build(self, input_shape):
        self.scale = self.add_weight("scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.scale


def test_a_layer_tfmot_refuses_fails_its_leaves_and_names_it(tmp_path):
    from collabopt.pipelines import zoo

    arrays = zoo.digits_images(flat=True)
    zoo.write_splits(str(tmp_path / "data"), arrays, name="digits")
    inputs = keras.Input(shape=(64,))
    x = keras.layers.Dense(32, name="dense1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)  # folded by TFMOT: skipped, not refused
    x = _Scale(name="scale")(keras.layers.ReLU()(x))
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    model.save(str(tmp_path / "model"))
    config = load_config(_config(tmp_path, {"examples": str(tmp_path / "data"),
                                            "feature_shape": [64]},
                                 {"path": str(tmp_path / "model")}))
    report = preflight(config)
    leaves = {leaf.path: leaf for leaf in report.leaves}
    assert leaves[BASELINE_LEAF].builds
    for path, leaf in leaves.items():
        if set(_techniques(path)) & {"prune", "cluster", "qat", "pqat", "cqat", "pcqat"}:
            assert leaf.builds is False and "'scale'" in leaf.reason, path
    refused = [t for t in report.techniques.values() if not t.ok]
    assert refused and all(t.refused == ["scale"] for t in refused)


def test_a_trainer_made_model_defers_the_model_checks(tmp_path):
    from collabopt.pipelines.demo.data import write_digits_examples

    write_digits_examples(str(tmp_path / "data"))
    config = load_config(_config(tmp_path, {"examples": str(tmp_path / "data")},
                                 {"run_fn": "collabopt.pipelines.demo.trainer_module.run_fn"}))
    report = preflight(config)
    assert report.model is None and "after training" in report.note
    assert all(leaf.builds is None for leaf in report.leaves) and not report.targets
    assert report.splits[0].examples + report.splits[1].examples == 1797


def test_labels_outside_the_model_outputs_stop_the_check(tmp_path, cnn_1d):
    from collabopt.components.core.data import FeatureSpec, write_examples
    from collabopt.pipelines import zoo

    (x, y), (xe, ye) = zoo.signals_1d(num_examples=200)
    ye = np.where(np.arange(len(ye)) % 4 == 0, 99, ye)
    spec = FeatureSpec(feature_key="image", label_key="label", feature_shape=(128, 1))
    write_examples(str(tmp_path / "data" / "train" / "a.tfrecord"), x, y, spec)
    write_examples(str(tmp_path / "data" / "eval" / "a.tfrecord"), xe, ye, spec)
    config = load_config(_config(tmp_path, {"examples": str(tmp_path / "data"),
                                            "feature_shape": [128, 1]},
                                 {"path": cnn_1d.model_path}))
    with pytest.raises(DatasetError, match=r"split 'eval' has 10 of 40 examples .* 99 \(10x\)"):
        preflight(config)
    flat = load_config(_config(tmp_path, {"examples": str(tmp_path / "data"),
                                          "feature_shape": [128]}, {"path": cnn_1d.model_path}))
    with pytest.raises(ModelDataMismatchError, match=r"Set feature_shape to \[128, 1\]"):
        preflight(flat)


def test_cli_check_prints_a_summary_or_one_clear_error(tmp_path, cnn_1d):
    from collabopt.pipelines.cli import main

    path = _cnn_1d_config(tmp_path, cnn_1d)
    runner = CliRunner()
    result = runner.invoke(main, ["check", path])
    assert result.exit_code == 0, result.output
    assert "Leaves" in result.output and "Fine-tuning:" in result.output
    as_json = runner.invoke(main, ["check", path, "--json"])
    assert json.loads(as_json.output)["targets"][0]["cpu_ops"] == 0

    train_file = os.path.join(cnn_1d.data_dir, "train", "cnn_1d.tfrecord")
    broken = tmp_path / "broken"
    (broken / "train").mkdir(parents=True)
    (broken / "eval").mkdir()
    with open(train_file, "rb") as f:
        (broken / "train" / "part.tfrecord").write_bytes(f.read()[:-9])
    (broken / "eval" / "part.tfrecord").write_bytes(
        open(os.path.join(cnn_1d.data_dir, "eval", "cnn_1d.tfrecord"), "rb").read())
    bad = _config(tmp_path, {**cnn_1d.data_config(), "examples": str(broken)},
                  {"path": cnn_1d.model_path})
    result = runner.invoke(main, ["check", bad])
    assert result.exit_code == 2
    assert "part.tfrecord" in result.output and "truncated" in result.output
    assert "Traceback" not in result.output
