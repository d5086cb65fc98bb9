"""The deployment-tree pipeline: end to end on real TFX runs with a SQLite MLMD store."""
from __future__ import annotations

import json
import os

import pytest
import yaml
from click.testing import CliRunner
from ml_metadata.proto import metadata_store_pb2

from collabopt.components.core.keras_compat import keras
from collabopt.pipelines import runners
from collabopt.pipelines.cli import main
from collabopt.pipelines.config import load_config
from collabopt.pipelines.metadata.read import read_leaves
from collabopt.pipelines.metadata.store import open_store

pytestmark = pytest.mark.e2e

COMPLETE = metadata_store_pb2.Execution.COMPLETE


def _config(workdir, inputs, **overrides) -> str:
    from collabopt.pipelines.demo.setup import demo_config

    raw = demo_config()
    raw.update({
        "data": {**raw["data"], "examples": str(inputs / "data")} if inputs else {},
        "base_model": {"path": str(inputs / "base_model")} if inputs else {},
        "training": {**raw["training"], "epochs": 1},
        "pruning": {**raw["pruning"], "target_sparsity": 0.5},
        "clustering": {**raw["clustering"], "number_of_clusters": 16},
        "targets": [{"accelerator_config": "ethos-u55-128"}],
    })
    raw.update(overrides)
    path = os.path.join(workdir, "pipeline.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return path


def _executed_nodes(metadata: str) -> dict[str, int]:
    """node id -> executions that really ran (COMPLETE), over every run in the store."""
    store = open_store(metadata)
    nodes = {}
    for context in store.get_contexts_by_type("node"):
        node_id = context.name.split(".", 1)[1]
        nodes[node_id] = sum(e.last_known_state == COMPLETE
                             for e in store.get_executions_by_context(context.id))
    return nodes


@pytest.fixture(scope="module")
def progressive_first_level_passes(tmp_path_factory, saved_digits_inputs):
    workdir = tmp_path_factory.mktemp("progressive-pass")
    config = load_config(_config(workdir, saved_digits_inputs, mode="progressive",
                                 leaves=["ptq", "prune>ptq", "prune>cluster>ptq"],
                                 thresholds={"min_accuracy": 0.5}))
    runners.run(config)
    return config


def test_progressive_skips_deeper_levels_when_first_level_passes(progressive_first_level_passes):
    config = progressive_first_level_passes
    nodes = _executed_nodes(config.metadata)
    assert nodes["Evaluator_ptq"] == 1
    assert nodes.get("Pruner_prune50", 0) == 0
    assert nodes.get("SparseClusterer_prune50_cluster16", 0) == 0
    assert nodes.get("Evaluator_prune50_cluster16_ptq", 0) == 0
    leaves = read_leaves(config.metadata)
    assert [leaf.path for leaf in leaves] == ["ptq"]
    assert leaves[0].selected
    pushed = os.listdir(config.serving_dir)
    assert len(pushed) == 1
    assert os.path.getsize(os.path.join(config.serving_dir, pushed[0], "model.tflite")) > 1000


@pytest.fixture(scope="module")
def progressive_nothing_passes(tmp_path_factory, saved_digits_inputs):
    workdir = tmp_path_factory.mktemp("progressive-fail")
    config = load_config(_config(workdir, saved_digits_inputs, mode="progressive",
                                 leaves=["ptq", "prune>ptq", "prune>cluster>ptq"],
                                 thresholds={"max_tflite_bytes": 1000}))
    runners.run(config)
    return config


def test_progressive_goes_deeper_and_run_succeeds_without_push(progressive_nothing_passes):
    config = progressive_nothing_passes
    nodes = _executed_nodes(config.metadata)
    for node in ("Evaluator_ptq", "Pruner_prune50", "Evaluator_prune50_ptq",
                 "SparseClusterer_prune50_cluster16", "Evaluator_prune50_cluster16_ptq", "Selector"):
        assert nodes[node] == 1, node
    leaves = read_leaves(config.metadata)
    assert {leaf.path for leaf in leaves} == {"ptq", "prune50>ptq", "prune50>cluster16>ptq"}
    assert not any(leaf.blessed or leaf.selected for leaf in leaves)
    assert all(any("max_tflite_bytes" in r for r in leaf.reasons) for leaf in leaves)
    assert not os.path.exists(config.serving_dir) or not os.listdir(config.serving_dir)


def test_no_leaf_passing_names_the_closest_and_by_how_much(progressive_nothing_passes):
    from collabopt.components import types as t
    from collabopt.pipelines.metadata.read import open_reader
    from collabopt.pipelines.metadata.reader import artifact_properties

    reader = open_reader(progressive_nothing_passes.metadata)
    run = reader.run_artifacts(reader.runs()[-1])
    final = [artifact_properties(b) for b in run.of_type("ModelBlessing")
             if artifact_properties(b).get(t.EXPLANATION, "").startswith("No leaf")]
    assert final, "the selector records why nothing was selected"
    assert "closest is" in final[0][t.EXPLANATION]
    assert "above max_tflite_bytes=1000" in final[0][t.EXPLANATION]


def test_leaves_json_has_the_documented_keys(small_run):
    result = CliRunner().invoke(main, ["leaves", "--metadata", small_run.metadata, "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert {r["path"] for r in records} == {"ptq", "prune50>cluster16>pcqat"}
    expected = {"path", "uri", "int8_accuracy", "accuracy_drop", "tflite_bytes", "gzip_bytes",
                "sparsity", "max_unique_per_kernel", "vela", "blessed", "selected", "reasons"}
    for record in records:
        assert expected <= set(record)
        assert {"target", "cycles", "inference_ms", "sram_bytes", "flash_bytes", "npu_ops",
                "cpu_ops"} <= set(record["vela"][0])
        assert record["vela"][0]["npu_ops"] > 0
    assert sum(r["selected"] for r in records) == 1
    pcqat = next(r for r in records if r["path"] == "prune50>cluster16>pcqat")
    assert pcqat["sparsity"] >= 0.45
    assert pcqat["gzip_bytes"] < next(r for r in records if r["path"] == "ptq")["gzip_bytes"]


def test_rerun_of_unchanged_config_reuses_every_component(small_run):
    store = open_store(small_run.metadata)
    runs = sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.create_time_since_epoch)
    assert len(runs) == 2
    second = store.get_executions_by_context(runs[1].id)
    assert second, "the second run recorded its (cached) executions"
    assert not [e for e in second if e.last_known_state == COMPLETE]


def test_cli_run_reports_a_bad_config_without_a_traceback(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("mode: greedy\n")
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 2
    assert "mode" in result.output and "greedy" in result.output
    assert "Traceback" not in result.output


def test_interrupted_run_resumes_without_redoing_finished_steps(tmp_path, saved_digits_inputs):
    """Kill a run once the Pruner has finished; the re-run reuses it and completes the tree."""
    import signal
    import subprocess
    import sys
    import time

    config_path = _config(tmp_path, saved_digits_inputs, leaves=["ptq", "prune>ptq"])
    config = load_config(config_path)
    proc = subprocess.Popen([sys.executable, "-m", "collabopt.pipelines.cli", "run", config_path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(config.metadata):
                try:
                    if _executed_nodes(config.metadata).get("Pruner_prune50"):
                        break
                except Exception:  # the store is being created or written
                    pass
            time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    before = _executed_nodes(config.metadata)
    assert before["Pruner_prune50"] == 1 and not before.get("Selector")

    runners.run(config)
    after = _executed_nodes(config.metadata)
    assert after["Pruner_prune50"] == 1, "the finished Pruner was reused, not run again"
    assert after["ImportExampleGen"] == 1
    assert after["Selector"] == 1 and after["Evaluator_prune50_ptq"] == 1
    assert {leaf.path for leaf in read_leaves(config.metadata)} == {"ptq", "prune50>ptq"}


def test_any_sequential_model_and_feature_keys(tmp_path):
    """Not the demo: a Sequential MLP on flat 64-value features stored under other keys."""
    from collabopt.components.core.data import FeatureSpec, dataset_from_arrays, write_examples
    from collabopt.pipelines.demo.data import load_digits_arrays

    spec = FeatureSpec(feature_key="pixels", label_key="digit", feature_shape=(64,))
    (x_train, y_train), (x_eval, y_eval) = load_digits_arrays()
    x_train, x_eval = x_train.reshape(-1, 64), x_eval.reshape(-1, 64)
    write_examples(str(tmp_path / "data" / "train" / "part.tfrecord"), x_train, y_train, spec)
    write_examples(str(tmp_path / "data" / "eval" / "part.tfrecord"), x_eval, y_eval, spec)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(shape=(64,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(dataset_from_arrays(x_train, y_train, shuffle=True), epochs=10, verbose=0)
    model.save(str(tmp_path / "mlp"))

    config = load_config(_config(
        tmp_path, {}, leaves=["ptq", "prune>cluster>pcqat"],
        data={"examples": str(tmp_path / "data"), "feature_key": "pixels", "label_key": "digit",
              "feature_shape": [64]},
        base_model={"path": str(tmp_path / "mlp")}, thresholds={"min_accuracy": 0.8}))
    runners.run(config)
    leaves = {leaf.path: leaf for leaf in read_leaves(config.metadata)}
    pcqat = leaves["prune50>cluster16>pcqat"]
    assert pcqat.int8_accuracy >= 0.8 and pcqat.sparsity >= 0.45
    assert pcqat.max_unique_per_channel <= 17  # 16 clusters, and the kept zero
    assert pcqat.vela[0]["npu_ops"] >= 3 and pcqat.vela[0]["cpu_ops"] == 0


@keras.utils.register_keras_serializable(package="collabopt_tests")
class ChannelScale(keras.layers.Layer):
    """A custom layer with a weight: TFLite converts it (a Mul), TFMOT can neither prune nor
    quantize-aware-train it."""

    def build(self, input_shape):
        self.scale = self.add_weight("scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.scale


def test_a_leaf_that_cannot_be_built_fails_alone_and_the_run_goes_on(tmp_path,
                                                                      saved_digits_inputs):
    from collabopt.pipelines.demo.data import load_digits_arrays
    from collabopt.components.core.data import dataset_from_arrays

    (x_train, y_train), _ = load_digits_arrays()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        ChannelScale(name="channel_scale"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(dataset_from_arrays(x_train, y_train, shuffle=True), epochs=5, verbose=0)
    model.save(str(tmp_path / "model"))

    config_path = _config(tmp_path, saved_digits_inputs, leaves=["ptq", "qat", "prune>ptq"],
                          base_model={"path": str(tmp_path / "model")},
                          thresholds={"min_accuracy": 0.5})
    result = CliRunner().invoke(main, ["run", config_path])
    assert result.exit_code == 0, result.output
    leaves = {leaf.path: leaf for leaf in read_leaves(load_config(config_path).metadata)}
    assert set(leaves) == {"ptq", "qat", "prune50>ptq"}
    assert leaves["ptq"].selected and leaves["ptq"].failure is None
    for path, step in (("qat", "PreservingQAT"), ("prune50>ptq", "Pruner")):
        failure = leaves[path].failure
        assert failure and failure["step"] == step, (path, failure)
        assert "channel_scale" in failure["message"], failure
        assert not leaves[path].blessed and not leaves[path].selected
        assert leaves[path].reasons and "failed" in leaves[path].reasons[0]
    assert "failed to build" in result.output and "FAILED" in result.output


def test_search_mode_tries_levels_in_rounds_and_records_why_it_stopped(tmp_path,
                                                                       saved_digits_inputs):
    """One technique, four candidate sparsities: bisection trains two or three of them, each
    round a real (cached) pipeline run; the final Selector records the trace."""
    from collabopt.components import types as t
    from collabopt.pipelines.metadata.read import open_reader
    from collabopt.pipelines.metadata.reader import artifact_properties

    config = load_config(_config(
        tmp_path, saved_digits_inputs, mode="search", leaves=["ptq", "prune>ptq"],
        pruning={"target_sparsity": [0.3, 0.5, 0.7, 0.97]},
        thresholds={"max_accuracy_drop": 0.05}))
    result = runners.run(config)
    trace = result.search_trace
    tried = {leaf.path for leaf in read_leaves(config.metadata, run_id=result.run_id)}
    assert "ptq" in tried and len(tried) - 1 < 4, tried       # not the whole list
    assert "prune97>ptq" in tried or trace["trials"][-1]["held"] is False
    assert trace["stopped"] and trace["stopped"][0].startswith("sparsity:")
    # Each round was a pipeline run; only the last one pushed.
    store = open_store(config.metadata)
    runs = store.get_contexts_by_type("pipeline_run")
    assert len(runs) == trace["rounds"]
    nodes = _executed_nodes(config.metadata)
    assert nodes.get("Pusher") == 1
    assert all(count <= 1 for node, count in nodes.items() if node.startswith("Pruner_"))
    reader = open_reader(config.metadata)
    blessing = [artifact_properties(b) for b in reader.run_artifacts(reader.run(result.run_id))
                .of_type("ModelBlessing") if t.SEARCH_TRACE in artifact_properties(b)]
    recorded = json.loads(blessing[0][t.SEARCH_TRACE])
    assert recorded["stopped"] == trace["stopped"]
    assert [tr["levels"] for tr in recorded["trials"] if tr["axis"] == "sparsity"]
