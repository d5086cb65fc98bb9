"""The six components run in real TFX pipelines; assertions read ML Metadata and the artifacts.

One module-scoped fixture runs the chain
    base -> Pruner -> SparseClusterer(preserve_sparsity) -> PreservingQAT(pcqat)
         -> TFLiteConverter -> VelaCompiler -> Evaluator(baseline) -> Pusher
plus the baseline branch base -> TFLiteConverter (PTQ) -> Evaluator, under LocalDagRunner with a
SQLite MLMD store, twice (the second run must be served from the cache). Another fixture runs a
small pipeline under BeamDagRunner with the base model in a TFX Trainer's `Format-Serving` layout.
"""
from __future__ import annotations

import json
import os

import pytest

from collabopt.components.core.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore")

PIPELINE = "chain"
EPOCHS = 1


# --- MLMD helpers ------------------------------------------------------------------------------

def _value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def _props(artifact) -> dict:
    return {k: _value(v) for k, v in artifact.custom_properties.items()}


class _Run:
    """What one pipeline run left in MLMD, by node id."""

    def __init__(self, store, pipeline_name: str):
        from ml_metadata.proto import metadata_store_pb2

        self.store = store
        self.pipeline_name = pipeline_name
        self._pb2 = metadata_store_pb2

    def executions(self, node_id: str):
        context = self.store.get_context_by_type_and_name("node", f"{self.pipeline_name}.{node_id}")
        assert context is not None, f"no MLMD context for node {node_id}"
        return self.store.get_executions_by_context(context.id)

    def outputs(self, node_id: str, key: str):
        """Artifacts the node's (first) COMPLETE execution emitted under output `key`."""
        complete = [e for e in self.executions(node_id)
                    if e.last_known_state == self._pb2.Execution.COMPLETE]
        assert complete, f"{node_id} has no COMPLETE execution"
        events = self.store.get_events_by_execution_ids([complete[0].id])
        ids = [e.artifact_id for e in events if e.type == self._pb2.Event.OUTPUT
               and e.path.steps and e.path.steps[0].key == key]
        return self.store.get_artifacts_by_id(ids)

    def output(self, node_id: str, key: str):
        artifacts = self.outputs(node_id, key)
        assert len(artifacts) == 1, f"{node_id}.{key}: {len(artifacts)} artifacts"
        return artifacts[0]

    def type_name(self, artifact) -> str:
        return self.store.get_artifact_types_by_id([artifact.type_id])[0].name

    def state_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for execution in self.store.get_executions():
            name = self._pb2.Execution.State.Name(execution.last_known_state)
            counts[name] = counts.get(name, 0) + 1
        return counts


def _store(db_path: str):
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    return metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(db_path))


# --- pipelines ---------------------------------------------------------------------------------

def _inputs(data_dir: str, model_dir: str):
    from tfx import v1 as tfx

    example_gen = tfx.components.ImportExampleGen(
        input_base=data_dir,
        input_config=tfx.proto.Input(splits=[
            tfx.proto.Input.Split(name="train", pattern="train/*"),
            tfx.proto.Input.Split(name="eval", pattern="eval/*")]))
    importer = tfx.dsl.Importer(
        source_uri=model_dir, artifact_type=tfx.types.standard_artifacts.Model,
        reimport=False).with_id("base_model")
    return example_gen, importer


def _chain_pipeline(root: str, data_dir: str, model_dir: str, serving_dir: str):
    from tfx import v1 as tfx

    from collabopt.components import (Evaluator, PreservingQAT, Pruner, SparseClusterer, TFLiteConverter,
                            VelaCompiler)

    example_gen, importer = _inputs(data_dir, model_dir)
    examples, base = example_gen.outputs["examples"], importer.outputs["result"]
    ptq = TFLiteConverter(model=base, examples=examples).with_id("ptq_converter")
    # The baseline's blessing is refused on size on purpose: its reasons are asserted.
    ptq_eval = Evaluator(tflite_model=ptq.outputs["tflite_model"], examples=examples,
                         min_accuracy=0.5, max_tflite_bytes=1000).with_id("ptq_evaluator")
    # The Pruner fine-tunes until recovered (a short cap); the other steps for EPOCHS epochs.
    pruner = Pruner(model=base, examples=examples, target_sparsity=0.5, max_epochs=2,
                    patience=1, feature_shape=[8, 8, 1])
    clusterer = SparseClusterer(model=pruner.outputs["optimized_model"], examples=examples,
                                number_of_clusters=8, preserve_sparsity=True, epochs=EPOCHS)
    pcqat = PreservingQAT(model=clusterer.outputs["optimized_model"], examples=examples,
                          mode="pcqat", epochs=EPOCHS)
    converter = TFLiteConverter(model=pcqat.outputs["optimized_model"], examples=examples,
                                quantization="int8")
    vela = VelaCompiler(tflite_model=converter.outputs["tflite_model"])
    evaluator = Evaluator(
        tflite_model=converter.outputs["tflite_model"], examples=examples,
        baseline_evaluation=ptq_eval.outputs["evaluation"], vela_model=vela.outputs["vela_model"],
        min_accuracy=0.5, max_accuracy_drop=0.4, max_tflite_bytes=1_000_000,
        max_inference_ms=100.0, max_sram_bytes=10_000_000)
    pusher = tfx.components.Pusher(
        model=pcqat.outputs["optimized_model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)))
    return tfx.dsl.Pipeline(
        pipeline_name=PIPELINE, pipeline_root=os.path.join(root, "pipeline_root"),
        components=[example_gen, importer, ptq, ptq_eval, pruner, clusterer, pcqat, converter,
                    vela, evaluator, pusher],
        enable_cache=True,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.join(root, "mlmd.sqlite")))


@pytest.fixture(scope="module")
def digits_examples_dir(tmp_path_factory):
    from collabopt.pipelines.demo.data import write_digits_examples

    out = str(tmp_path_factory.mktemp("digits_examples"))
    write_digits_examples(out)
    return out


@pytest.fixture(scope="module")
def chain_run(tmp_path_factory, digits_examples_dir, trained_digits_model):
    """Runs the chain pipeline twice (second run cached); returns the MLMD view and counts."""
    from tfx import v1 as tfx

    from collabopt.components.core import qat

    root = str(tmp_path_factory.mktemp("chain"))
    model_dir = os.path.join(root, "base_model")
    qat.save_model(trained_digits_model, model_dir)   # a model saved by tf_keras directly
    serving_dir = os.path.join(root, "serving")
    tfx.orchestration.LocalDagRunner().run(
        _chain_pipeline(root, digits_examples_dir, model_dir, serving_dir))
    run = _Run(_store(os.path.join(root, "mlmd.sqlite")), PIPELINE)
    first = run.state_counts()
    tfx.orchestration.LocalDagRunner().run(
        _chain_pipeline(root, digits_examples_dir, model_dir, serving_dir))
    second = run.state_counts()
    return {"run": run, "first": first, "second": second, "serving_dir": serving_dir}


# --- chain pipeline ----------------------------------------------------------------------------

NODES = ("ImportExampleGen", "base_model", "ptq_converter", "ptq_evaluator", "Pruner",
         "SparseClusterer", "PreservingQAT", "TFLiteConverter", "VelaCompiler",
         "TFLiteEvaluator", "Pusher")


@pytest.mark.e2e
def test_every_node_completed_once(chain_run):
    assert chain_run["first"] == {"COMPLETE": len(NODES)}
    for node in NODES:
        assert chain_run["run"].executions(node), node


@pytest.mark.e2e
def test_rerun_with_cache_creates_no_new_complete_executions(chain_run):
    # TFX records a cache hit as a new execution in state CACHED pointing at the old outputs.
    assert chain_run["second"] == {"COMPLETE": len(NODES), "CACHED": len(NODES)}


@pytest.mark.e2e
def test_cached_executions_reuse_the_first_outputs(chain_run):
    from ml_metadata.proto import metadata_store_pb2

    run = chain_run["run"]
    executions = run.executions("PreservingQAT")
    by_state = {e.last_known_state: e.id for e in executions}
    outputs = {}
    for state, execution_id in by_state.items():
        events = run.store.get_events_by_execution_ids([execution_id])
        outputs[state] = {e.artifact_id for e in events
                          if e.type == metadata_store_pb2.Event.OUTPUT}
    assert outputs[metadata_store_pb2.Execution.CACHED] == \
        outputs[metadata_store_pb2.Execution.COMPLETE]


@pytest.mark.e2e
def test_pruner_output_is_a_sparse_model(chain_run):
    run = chain_run["run"]
    model = run.output("Pruner", "optimized_model")
    props = _props(model)
    assert run.type_name(model) == "Model"
    assert props["technique_path"] == "prune50"
    assert 0.45 <= props["sparsity"] <= 0.6
    assert props["min_kernel_sparsity"] >= 0.45
    assert 0.5 <= props["keras_accuracy"] <= 1.0
    params = json.loads(props["parameters"])
    assert params["target_sparsity"] == 0.5 and params["feature_shape"] == "8,8,1"
    assert os.path.exists(os.path.join(model.uri, "Format-Serving", "saved_model.pb"))
    # Fine-tuned until recovered on a slice of the train split, within max_epochs=2.
    assert 1 <= props["epochs_trained"] <= 2
    assert props["stop_reason"] in ("recovered", "no_improvement", "max_epochs")
    assert 0.5 <= props["validation_accuracy"] <= 1.0
    assert props["reference_accuracy"] >= 0.8
    assert "epochs" not in params and params["max_epochs"] == 2


@pytest.mark.e2e
def test_clusterer_keeps_sparsity_and_clusters(chain_run):
    props = _props(chain_run["run"].output("SparseClusterer", "optimized_model"))
    assert props["technique_path"] == "prune50>cluster8"
    assert props["max_unique_per_kernel"] <= 8
    assert props["min_kernel_sparsity"] >= 0.45
    assert json.loads(props["parameters"])["preserve_sparsity"] is True
    assert props["epochs_trained"] == EPOCHS and props["stop_reason"] == "fixed_epochs"
    assert "validation_accuracy" not in props


@pytest.mark.e2e
def test_pcqat_output_keeps_sparsity_and_clusters(chain_run):
    props = _props(chain_run["run"].output("PreservingQAT", "optimized_model"))
    assert props["technique_path"] == "prune50>cluster8>pcqat"
    assert props["qat_mode"] == "pcqat"
    assert props["min_kernel_sparsity"] >= 0.45
    # CQAT keeps a Conv2D kernel's clusters per output channel (core/qat.py): a kernel as a whole
    # may hold clusters x channels values when its channels trained their centroids apart.
    assert props["max_unique_per_channel"] <= 8
    assert 0.5 <= props["keras_accuracy"] <= 1.0


@pytest.mark.e2e
def test_pcqat_keeps_sparsity_and_clusters_in_tflite(chain_run):
    run = chain_run["run"]
    tflite = run.output("TFLiteConverter", "tflite_model")
    props = _props(tflite)
    assert run.type_name(tflite) == "collabopt.TFLiteModel"
    assert props["technique_path"] == "prune50>cluster8>pcqat"
    assert props["quantization"] == "int8"
    assert props["min_kernel_sparsity"] >= 0.45
    assert props["max_unique_per_channel"] <= 8
    path = os.path.join(tflite.uri, "model.tflite")
    assert props["tflite_bytes"] == os.path.getsize(path)
    assert 0 < props["gzip_bytes"] < props["tflite_bytes"]


@pytest.mark.e2e
def test_ptq_branch_is_the_baseline_leaf(chain_run):
    run = chain_run["run"]
    ptq = _props(run.output("ptq_converter", "tflite_model"))
    pcqat = _props(run.output("TFLiteConverter", "tflite_model"))
    assert ptq["technique_path"] == "ptq"
    assert ptq["sparsity"] < 0.05          # the dense base model
    # Pruned + clustered weights compress far better than the dense ones.
    assert pcqat["gzip_bytes"] < 0.8 * ptq["gzip_bytes"]


@pytest.mark.e2e
def test_vela_model_properties(chain_run):
    run = chain_run["run"]
    vela = run.output("VelaCompiler", "vela_model")
    props = _props(vela)
    assert run.type_name(vela) == "collabopt.VelaModel"
    assert props["target"] == "ethos-u55-128"
    assert props["technique_path"] == "prune50>cluster8>pcqat"
    assert props["optimise"] == "Performance"
    assert props["cycles"] > 0 and 0 < props["inference_ms"] < 100
    assert props["sram_bytes"] > 0 and props["flash_bytes"] > 0
    assert 0 < props["encoded_weight_bytes"] and 0 < props["original_weight_bytes"]
    assert props["npu_ops"] >= 1 and props["cpu_ops"] >= 0
    for name in ("model_vela.tflite", "summary.csv"):
        assert os.path.exists(os.path.join(vela.uri, name)), name


@pytest.mark.e2e
def test_evaluator_blesses_with_baseline_and_vela(chain_run):
    run = chain_run["run"]
    evaluation = run.output("TFLiteEvaluator", "evaluation")
    blessing = run.output("TFLiteEvaluator", "blessing")
    props, blessed = _props(evaluation), _props(blessing)
    assert run.type_name(evaluation) == "ModelEvaluation"
    assert run.type_name(blessing) == "ModelBlessing"
    baseline = _props(run.output("ptq_evaluator", "evaluation"))
    assert 0.5 <= props["int8_accuracy"] <= 1.0
    assert props["num_examples"] == 359
    assert props["baseline_accuracy"] == pytest.approx(baseline["int8_accuracy"])
    assert props["accuracy_drop"] == pytest.approx(
        baseline["int8_accuracy"] - props["int8_accuracy"])
    assert props["technique_path"] == "prune50>cluster8>pcqat"
    assert props["inference_ms"] > 0 and props["sram_bytes"] > 0
    assert blessed["blessed"] == 1 and json.loads(blessed["reasons"]) == []
    assert os.path.exists(os.path.join(blessing.uri, "BLESSED"))
    assert not os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))


@pytest.mark.e2e
def test_evaluator_refusal_names_threshold_and_value(chain_run):
    run = chain_run["run"]
    blessing = run.output("ptq_evaluator", "blessing")
    props = _props(blessing)
    tflite_bytes = _props(run.output("ptq_converter", "tflite_model"))["tflite_bytes"]
    assert props["blessed"] == 0
    reasons = json.loads(props["reasons"])
    assert len(reasons) == 1
    assert "max_tflite_bytes=1000" in reasons[0] and str(tflite_bytes) in reasons[0]
    assert os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
    assert "accuracy_drop" not in _props(run.output("ptq_evaluator", "evaluation"))


@pytest.mark.e2e
def test_standard_pusher_accepts_the_blessing(chain_run):
    pushed = chain_run["run"].output("Pusher", "pushed_model")
    assert _props(pushed)["pushed"] == 1
    destination = _props(pushed)["pushed_destination"]
    assert destination.startswith(chain_run["serving_dir"])
    assert os.path.exists(os.path.join(destination, "saved_model.pb"))


# --- BeamDagRunner, Trainer layout -------------------------------------------------------------

@pytest.fixture(scope="module")
def beam_run(tmp_path_factory, digits_examples_dir, trained_digits_model):
    """base (in a Trainer's Format-Serving/ layout) -> TFLiteConverter -> Evaluator, on Beam."""
    from tfx import v1 as tfx
    from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

    from collabopt.components import Evaluator, TFLiteConverter
    from collabopt.components.core import qat

    root = str(tmp_path_factory.mktemp("beam"))
    model_dir = os.path.join(root, "trainer_output")
    qat.save_model(trained_digits_model, os.path.join(model_dir, "Format-Serving"))
    example_gen, importer = _inputs(digits_examples_dir, model_dir)
    converter = TFLiteConverter(model=importer.outputs["result"],
                                examples=example_gen.outputs["examples"],
                                num_calibration_samples=50)
    evaluator = Evaluator(tflite_model=converter.outputs["tflite_model"],
                          examples=example_gen.outputs["examples"], min_accuracy=0.5)
    db = os.path.join(root, "mlmd.sqlite")
    BeamDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="beam", pipeline_root=os.path.join(root, "pipeline_root"),
        components=[example_gen, importer, converter, evaluator], enable_cache=False,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            db)))
    return _Run(_store(db), "beam")


@pytest.mark.e2e
def test_beam_runner_runs_components_on_trainer_layout(beam_run):
    assert beam_run.state_counts() == {"COMPLETE": 4}
    tflite = _props(beam_run.output("TFLiteConverter", "tflite_model"))
    assert tflite["technique_path"] == "ptq" and tflite["quantization"] == "int8"
    blessing = beam_run.output("TFLiteEvaluator", "blessing")
    assert _props(blessing)["blessed"] == 1
    assert os.path.exists(os.path.join(blessing.uri, "BLESSED"))
    assert _props(beam_run.output("TFLiteEvaluator", "evaluation"))["int8_accuracy"] >= 0.5


# --- construction-time validation (fast) -------------------------------------------------------

def _channel(type_name: str):
    from tfx import types as tfx_types
    from tfx.types import standard_artifacts

    from collabopt.components import types

    artifact_type = getattr(standard_artifacts, type_name, None) or getattr(types, type_name)
    return tfx_types.Channel(type=artifact_type)


def _model_inputs():
    return {"model": _channel("Model"), "examples": _channel("Examples")}


@pytest.mark.parametrize("kwargs, match", [
    ({"target_sparsity": 1.5}, "target_sparsity"),
    ({"pruning_schedule": "cubic"}, "pruning_schedule='cubic'.*polynomial_decay"),
    ({"sparsity_m_by_n": "4:2"}, "sparsity_m_by_n='4:2'"),
    ({"frequency": 0}, "frequency"),
    ({"epochs": 0}, "epochs=0"),
    ({"learning_rate": -1}, "learning_rate"),
    ({"feature_shape": "8,x,1"}, "feature_shape='8,x,1'"),
    ({"layers": "[1, 2]"}, "layers="),
])
def test_pruner_rejects_bad_parameters_at_construction(kwargs, match):
    from collabopt.components import Pruner

    with pytest.raises(ConfigError, match=match):
        Pruner(**_model_inputs(), **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"number_of_clusters": 1}, "number_of_clusters"),
    ({"cluster_centroids_init": "bogus"}, "cluster_centroids_init='bogus'.*kmeans_plus_plus"),
    ({"batch_size": 0}, "batch_size=0"),
])
def test_sparse_clusterer_rejects_bad_parameters_at_construction(kwargs, match):
    from collabopt.components import SparseClusterer

    with pytest.raises(ConfigError, match=match):
        SparseClusterer(**_model_inputs(), **kwargs)


def test_other_components_reject_bad_parameters_at_construction():
    from collabopt.components import Evaluator, PreservingQAT, TFLiteConverter, VelaCompiler

    with pytest.raises(ConfigError, match="mode='xqat'.*pcqat"):
        PreservingQAT(**_model_inputs(), mode="xqat")
    with pytest.raises(ConfigError, match="quantization='int4'.*int16x8"):
        TFLiteConverter(**_model_inputs(), quantization="int4")
    with pytest.raises(ConfigError, match="num_calibration_samples=0"):
        TFLiteConverter(**_model_inputs(), num_calibration_samples=0)
    with pytest.raises(ConfigError, match="optimise='Fast'.*Performance"):
        VelaCompiler(tflite_model=_channel("TFLiteModel"), optimise="Fast")
    with pytest.raises(ConfigError, match="ethos-u99"):
        VelaCompiler(tflite_model=_channel("TFLiteModel"), accelerator_config="ethos-u99-128")
    tflite = {"tflite_model": _channel("TFLiteModel"), "examples": _channel("Examples")}
    with pytest.raises(ConfigError, match=r"min_accuracy=1.5.*\[0, 1\]"):
        Evaluator(**tflite, min_accuracy=1.5)
    with pytest.raises(ConfigError, match="max_sram_bytes=-1"):
        Evaluator(**tflite, vela_model=_channel("VelaModel"), max_sram_bytes=-1)
    with pytest.raises(ConfigError, match="max_inference_ms.*vela_model"):
        Evaluator(**tflite, max_inference_ms=5.0)
    with pytest.raises(ConfigError, match="max_arena_bytes=-1"):
        Evaluator(**tflite, max_arena_bytes=-1)
    with pytest.raises(ConfigError, match="not both"):
        Evaluator(**tflite, vela_model=_channel("VelaModel"),
                  vela_models={"ethos-u65-256": _channel("VelaModel")})


def test_evaluator_and_selector_take_one_channel_per_target():
    from collabopt.components import Evaluator
    from collabopt.components.selector.component import Selector

    evaluator = Evaluator(tflite_model=_channel("TFLiteModel"), examples=_channel("Examples"),
                          vela_models={"ethos-u55-128": _channel("VelaModel"),
                                       "ethos-u65-256": _channel("VelaModel"),
                                       "ethos-u85-256": _channel("VelaModel")},
                          max_inference_ms=1.0)
    assert {"vela_model", "vela_model_1", "vela_model_2"} <= set(evaluator.inputs)
    assert json.loads(evaluator.exec_properties["targets"]) == [
        "ethos-u55-128", "ethos-u65-256", "ethos-u85-256"]
    selector = Selector({"ptq": _channel("ModelEvaluation")},
                        targets=["ethos-u55-128", "ethos-u65-256"])
    assert set(selector.outputs) == {"model", "blessing", "blessing_1"}
    with pytest.raises(ConfigError, match="target names must differ"):
        Selector({"ptq": _channel("ModelEvaluation")}, targets=["a", "a"])


def test_components_accept_lists_and_ints_and_store_primitives():
    from collabopt.components import Evaluator, Pruner, SparseClusterer

    pruner = Pruner(**_model_inputs(), target_sparsity=0, sparsity_m_by_n=(2, 4),
                    layers=["conv2", "dense1"], feature_shape=[8, 8, 1], learning_rate=1)
    props = pruner.exec_properties
    assert props["sparsity_m_by_n"] == "2:4" and props["layers"] == "conv2,dense1"
    assert props["feature_shape"] == "8,8,1" and props["target_sparsity"] == 0.0
    assert isinstance(props["learning_rate"], float)
    assert SparseClusterer(**_model_inputs(), preserve_sparsity=True).exec_properties[
        "preserve_sparsity"] is True
    evaluator = Evaluator(tflite_model=_channel("TFLiteModel"), examples=_channel("Examples"),
                          max_accuracy_drop=0.02)  # no baseline: this evaluates the baseline
    assert evaluator.id == "TFLiteEvaluator"
    assert evaluator.with_id("leaf_eval").id == "leaf_eval"


def test_importing_core_does_not_import_tfx():
    import subprocess
    import sys

    code = ("import sys, collabopt.components.core.data, collabopt.components.core.preservation, "
            "collabopt.components.params, collabopt.components.core.selection; "
            "assert 'tfx' not in sys.modules, 'tfx imported'; "
            "import os; assert os.environ['TF_USE_LEGACY_KERAS'] == '1'; "
            "from collabopt.components import Pruner; assert 'tfx' in sys.modules")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
