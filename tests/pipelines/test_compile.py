"""`collabopt compile`: the Kubeflow Pipelines v2 spec of the deployment tree, without a cluster.

The spec is checked against the TFX pipeline `collabopt.pipelines.tree` builds from the same config (nodes,
channel dependencies, parameters, conditions), and one step is run from the very command and
arguments the spec gives its container, with an ExecutorInput built the way KFP 2.x's driver
builds one (backend/src/v2/driver and v2/metadata of kubeflow/pipelines):

- parameters go into `inputs.parameterValues`, the `runtimeValue.constant` of the task;
- an input artifact carries `name` (its MLMD id), `uri`, `type.instanceSchema` (the producer's
  output schema) and `metadata` (the producer's custom properties, numbers as JSON numbers);
- an output artifact carries `uri` and `type`; the step writes `outputs.outputFile`.

tests/container checks the image (entrypoint, install) and tests/kustomize the manifests and
`kfp_submit`; what needs a cluster is listed in docs/kubeflow.md.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from collabopt.components import keys
from collabopt.components import types as artifact_types
from collabopt.components.core.leaves import BASELINE_LEAF, leaf_key
from collabopt.pipelines.cli import main
from collabopt.pipelines.config import load_config
from collabopt.pipelines.tree import create_pipeline

IMAGE = "registry.example.com/collabopt:test"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUSTOM_TYPES = {"collabopt.TFLiteModel": artifact_types.TFLiteModel,
                "collabopt.VelaModel": artifact_types.VelaModel}
VELA_STEP = "VelaCompiler_ptq_0_ethos_u55_128"


def _compile(config_path: str, out: str, *extra: str) -> dict:
    result = CliRunner().invoke(main, ["compile", config_path, "--out", out, "--image", IMAGE,
                                       *extra])
    assert result.exit_code == 0, (result.output, result.exception)
    with open(out) as f:
        return json.load(f)


def _write_config(path, raw: dict) -> str:
    with open(path, "w") as f:
        yaml.safe_dump(raw, f, sort_keys=False)
    return str(path)


def _constant(task: dict, name: str):
    """A task parameter as KFP 2.x's driver resolves it (`runtimeValue.constant` only)."""
    return task["inputs"]["parameters"][name]["runtimeValue"]["constant"]


class Compiled:
    """A compiled spec next to the TFX pipeline built from the same config."""

    def __init__(self, config_path: str, job: dict):
        self.config = load_config(config_path)
        self.pipeline = create_pipeline(self.config, None)
        self.job = job
        self.spec = job["pipelineSpec"]
        self.tasks = self.spec["root"]["dag"]["tasks"]
        self.executors = self.spec["deploymentSpec"]["executors"]
        self.components = self.spec["components"]

    def executor(self, task_id: str) -> dict:
        label = self.components[self.tasks[task_id]["componentRef"]["name"]]["executorLabel"]
        return self.executors[label]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo config as `collabopt demo` writes it: all eight leaves, two Ethos-U targets."""
    from collabopt.pipelines.demo.setup import write_demo

    workdir = tmp_path_factory.mktemp("demo")
    config_path = write_demo(str(workdir))
    return Compiled(config_path, _compile(config_path, str(workdir / "pipeline.json")))


@pytest.fixture(scope="module")
def on_bucket(tmp_path_factory):
    """Everything on a bucket as on a cluster (the base model imported), two levels each."""
    from collabopt.pipelines.demo.setup import demo_config

    workdir = tmp_path_factory.mktemp("on-bucket")
    raw = demo_config()
    raw["pruning"]["target_sparsity"] = [0.5, 0.75]
    raw["clustering"]["number_of_clusters"] = [16, 8]
    raw.update(pipeline_root="gs://collabopt-test/root",
               metadata="grpc://metadata-grpc-service.kubeflow:8080",
               data={**raw["data"], "examples": "gs://collabopt-test/data/digits"},
               base_model={"path": "gs://collabopt-test/models/digits_cnn"})
    config_path = _write_config(workdir / "pipeline.yaml", raw)
    return Compiled(config_path, _compile(config_path, str(workdir / "pipeline.json")))


# --------------------------------------------------------------------------- the tree as a DAG
def test_every_node_of_the_tree_is_a_task(demo):
    assert set(demo.tasks) == {node.id for node in demo.pipeline.components}
    config = demo.config
    leaves = config.all_leaves()
    assert len(config.leaves) == 8 and len(config.targets) == 2
    vela_steps = [t for t in demo.tasks if t.startswith("VelaCompiler_")]
    evaluators = [t for t in demo.tasks if t.startswith("Evaluator_")]
    assert len(vela_steps) == len(leaves) * len(config.targets)
    assert sorted(evaluators) == sorted(f"Evaluator_{leaf.key}" for leaf in leaves)


def test_levels_build_shared_prefixes_once(on_bucket):
    tasks = set(on_bucket.tasks)
    assert {t for t in tasks if t.startswith("Pruner_")} == {"Pruner_prune50", "Pruner_prune75"}
    assert {t for t in tasks if t.startswith("SparseClusterer_")} == {
        "SparseClusterer_cluster16", "SparseClusterer_cluster8",
        "SparseClusterer_prune50_cluster16", "SparseClusterer_prune50_cluster8",
        "SparseClusterer_prune75_cluster16", "SparseClusterer_prune75_cluster8"}
    for clusters in (16, 8):
        assert _input_from(on_bucket, f"SparseClusterer_prune75_cluster{clusters}",
                           keys.MODEL_KEY) == ("Pruner_prune75", keys.OPTIMIZED_MODEL_KEY)
    assert len([t for t in tasks if t.startswith("Evaluator_")]) == 18


@pytest.mark.parametrize("mode, alternative", [("progressive", "mode: exhaustive"),
                                               ("search", "as lists")])
def test_conditional_modes_are_refused_at_compile_time_naming_the_alternative(
        tmp_path, mode, alternative):
    from collabopt.pipelines.demo.setup import demo_config

    config_path = _write_config(tmp_path / "pipeline.yaml", demo_config(mode=mode))
    result = CliRunner().invoke(main, ["compile", config_path, "--out",
                                       str(tmp_path / "p.json"), "--image", IMAGE])
    assert result.exit_code == 2
    assert f"mode: {mode} cannot be compiled for Kubeflow Pipelines" in result.output
    assert alternative in result.output
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("compiled", ["demo", "on_bucket"])
def test_dag_edges_are_the_channel_dependencies(compiled, request):
    compiled = request.getfixturevalue(compiled)
    for node in compiled.pipeline.components:
        task = compiled.tasks[node.id]
        assert set(task.get("dependentTasks", [])) == {n.id for n in node.upstream_nodes}, node.id
        producers = {a["taskOutputArtifact"]["producerTask"]
                     for a in task.get("inputs", {}).get("artifacts", {}).values()}
        assert producers <= set(task.get("dependentTasks", [])), node.id


def _input_from(compiled: Compiled, task_id: str, key: str) -> tuple[str, str]:
    ref = compiled.tasks[task_id]["inputs"]["artifacts"][key]["taskOutputArtifact"]
    return ref["producerTask"], ref["outputArtifactKey"]


def _leaf(compiled: Compiled, template: str):
    return next(leaf for leaf in compiled.config.all_leaves() if leaf.template == template)


def test_pcqat_leaf_trains_the_pruned_then_clustered_model(demo):
    prune, cluster, pcqat = _leaf(demo, "prune>cluster>pcqat").steps
    qat_id = f"PreservingQAT_{prune}_{cluster}_{pcqat}"
    clusterer_id, pruner_id = f"SparseClusterer_{prune}_{cluster}", f"Pruner_{prune}"
    assert _input_from(demo, qat_id, keys.MODEL_KEY) == (clusterer_id, keys.OPTIMIZED_MODEL_KEY)
    assert _input_from(demo, clusterer_id, keys.MODEL_KEY) == (pruner_id, keys.OPTIMIZED_MODEL_KEY)
    assert _input_from(demo, pruner_id, keys.MODEL_KEY) == ("Trainer", "model")
    assert clusterer_id in demo.tasks[qat_id]["dependentTasks"]
    assert pruner_id in demo.tasks[clusterer_id]["dependentTasks"]


def test_every_evaluator_but_the_baseline_depends_on_the_baseline(demo):
    baseline = f"Evaluator_{leaf_key(BASELINE_LEAF)}"
    assert keys.BASELINE_EVALUATION_KEY not in demo.tasks[baseline]["inputs"]["artifacts"]
    others = [t for t in demo.tasks if t.startswith("Evaluator_") and t != baseline]
    assert len(others) == len(demo.config.all_leaves()) - 1
    for task_id in others:
        assert _input_from(demo, task_id, keys.BASELINE_EVALUATION_KEY) == (
            baseline, keys.EVALUATION_KEY)
        assert baseline in demo.tasks[task_id]["dependentTasks"]


# --------------------------------------------------------------------------- containers
@pytest.mark.parametrize("compiled", ["demo", "on_bucket"])
def test_every_container_step_runs_in_the_given_image(compiled, request):
    from tfx.orchestration.kubeflow.v2.kubeflow_v2_dag_runner import KUBEFLOW_TFX_CMD
    from tfx.utils import import_utils

    compiled = request.getfixturevalue(compiled)
    kinds = {}
    for node in compiled.pipeline.components:
        executor = compiled.executor(node.id)
        (kinds[node.id],) = executor
        if "importer" in executor:  # run by KFP's own launcher, not in our image
            continue
        container = executor["container"]
        assert container["image"] == IMAGE, node.id
        assert container["command"] == list(KUBEFLOW_TFX_CMD), node.id
        args = container["args"]
        class_path = args[args.index("--executor_class_path") + 1]
        assert import_utils.import_class_by_path(class_path) is node.executor_spec.executor_class
        assert args[args.index("--json_serialized_invocation_args") + 1] == "{{$}}"
        # Pipeline spec 2.1: the step reads parameterValues (what KFP 2.x sends) by this spec.
        inputs_spec = json.loads(args[args.index("--json_serialized_inputs_spec_args") + 1])
        assert inputs_spec == compiled.components[node.id].get("inputDefinitions", {}), node.id
    importers = {n for n, kind in kinds.items() if kind == "importer"}
    assert importers == ({"BaseModelImporter"} if compiled.config.base_model.path else set())
    if importers:
        importer = compiled.executor("BaseModelImporter")["importer"]
        assert importer["artifactUri"]["constant"] == compiled.config.base_model.path


def test_custom_artifact_types_are_named_by_their_import_path(demo):
    from tfx.orchestration.kubeflow.v2 import compiler_utils
    from tfx.types import artifact as tfx_artifact
    from tfx.utils import import_utils

    titles = set()
    for component in demo.components.values():
        for definitions in ("inputDefinitions", "outputDefinitions"):
            for spec in component.get(definitions, {}).get("artifacts", {}).values():
                titles.add(yaml.safe_load(spec["artifactType"]["instanceSchema"])["title"])
    custom = titles - set(compiler_utils.TITLE_TO_CLASS_PATH)
    assert custom == set(CUSTOM_TYPES)
    for title in custom:  # what the step's entrypoint does with the schema title
        cls = import_utils.import_class_by_path(title)
        assert cls is CUSTOM_TYPES[title]
        assert issubclass(cls, tfx_artifact.Artifact) and cls.TYPE_NAME == title


# --------------------------------------------------------------------------- parameters
def test_parameters_are_constants_of_their_tasks(demo):
    config = demo.config
    assert demo.spec["schemaVersion"] == "2.1.0"
    pcqat = _leaf(demo, "prune>cluster>pcqat")
    prune = demo.tasks[f"Pruner_{pcqat.steps[0]}"]
    assert _constant(prune, keys.TARGET_SPARSITY_KEY) == pcqat.target_sparsity
    assert _constant(prune, keys.PRUNING_SCHEDULE_KEY) == config.pruning.pruning_schedule
    for task_id, preserve in ((f"SparseClusterer_{pcqat.steps[1]}", 0),
                              (f"SparseClusterer_{pcqat.steps[0]}_{pcqat.steps[1]}", 1)):
        task = demo.tasks[task_id]
        assert _constant(task, keys.NUMBER_OF_CLUSTERS_KEY) == pcqat.number_of_clusters
        assert _constant(task, keys.PRESERVE_SPARSITY_KEY) == preserve
    assert _constant(demo.tasks[f"PreservingQAT_{pcqat.key}"], keys.MODE_KEY) == "pcqat"
    for path in (leaf.path for leaf in config.all_leaves()):
        for index, target in enumerate(config.targets):
            suffix = re.sub(r"[^A-Za-z0-9]+", "_", target.accelerator_config)
            task = demo.tasks[f"VelaCompiler_{leaf_key(path)}_{index}_{suffix}"]
            assert _constant(task, keys.ACCELERATOR_CONFIG_KEY) == target.accelerator_config
            assert _constant(task, keys.OPTIMISE_KEY) == target.optimise
        evaluator = demo.tasks[f"Evaluator_{leaf_key(path)}"]
        for name, value in config.thresholds.as_dict().items():
            assert _constant(evaluator, name) == value, (path, name)
    selector = demo.tasks["Selector"]
    assert json.loads(_constant(selector, keys.THRESHOLDS_KEY)) == config.thresholds.as_dict()
    assert _constant(selector, keys.OBJECTIVE_KEY) == config.objective
    assert _constant(selector, keys.OBJECTIVE_TOLERANCE_KEY) == config.objective_tolerance
    assert {k for k in selector["inputs"]["artifacts"]} == {
        leaf.key for leaf in config.all_leaves()}


def test_every_parameter_has_a_typed_definition(demo):
    for task_id, task in demo.tasks.items():
        definitions = demo.components[task_id].get("inputDefinitions", {}).get("parameters", {})
        assert set(task.get("inputs", {}).get("parameters", {})) == set(definitions), task_id
        for name, definition in definitions.items():
            value = _constant(task, name)
            expected = {"STRING": str, "NUMBER_INTEGER": float, "NUMBER_DOUBLE": float}
            assert isinstance(value, expected[definition["parameterType"]]), (task_id, name)


# --------------------------------------------------------------------------- root and metadata
def test_pipeline_root_comes_from_the_config(demo, on_bucket):
    assert demo.job["runtimeConfig"]["gcsOutputDirectory"] == demo.config.pipeline_root
    assert os.path.isabs(demo.config.pipeline_root)  # relative to pipeline.yaml, made absolute
    assert on_bucket.job["runtimeConfig"]["gcsOutputDirectory"] == "gs://collabopt-test/root"


@pytest.mark.parametrize("metadata, root", [
    ("grpc://metadata-grpc-service.kubeflow:8080", "gs://collabopt-test/x"),
    ("mysql://root:s3cret@mysql.kubeflow:3306/metadb", "s3://mlpipeline/collabopt/x"),
])
def test_cluster_metadata_is_kfps_own_and_never_contacted(tmp_path, metadata, root):
    """On a cluster KFP records lineage itself; compile neither connects to nor embeds the URL."""
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata as tfx_metadata
    from collabopt.pipelines.demo.setup import demo_config

    raw = demo_config()
    raw.update(metadata=metadata, leaves=["ptq"], targets=[{"accelerator_config": "ethos-u55-128"}],
               data={**raw["data"], "examples": "gs://collabopt-test/data"})
    config_path = _write_config(tmp_path / "pipeline.yaml", raw)
    refuse = AssertionError(f"compile tried to connect to {metadata}")
    with mock.patch.object(metadata_store, "MetadataStore", side_effect=refuse), \
            mock.patch.object(tfx_metadata.Metadata, "__enter__", side_effect=refuse):
        job = _compile(config_path, str(tmp_path / "pipeline.json"), "--pipeline-root", root)
    assert job["runtimeConfig"]["gcsOutputDirectory"] == root
    text = json.dumps(job)
    assert "metadata-grpc-service" not in text and "mysql" not in text and "s3cret" not in text


# --------------------------------------------------------------------------- submit
def test_compiled_spec_is_a_package_kfp_submit_uploads(on_bucket, tmp_path):
    from kfp.client.client import _extract_pipeline_yaml

    from collabopt.pipelines import kfp_submit

    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(on_bucket.job))
    package = kfp_submit.load_package(str(path))
    assert package.pipeline_root == on_bucket.config.pipeline_root
    doc = _extract_pipeline_yaml(kfp_submit.write_yaml(package, str(tmp_path)))
    assert set(doc.pipeline_spec.root.dag.tasks) == set(on_bucket.tasks)


# --------------------------------------------------------------------------- one step, for real
@pytest.fixture(scope="module")
def int8_tflite() -> bytes:
    """A real int8 `.tflite` of a tiny CNN on the demo's 8x8x1 inputs."""
    from collabopt.components.core import tflite
    from collabopt.components.core.keras_compat import keras

    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(16):
            yield [rng.random((1, 8, 8, 1), dtype=np.float32)]

    return tflite.convert(model, tflite.QuantizationMode.INT8, representative_data=representative)


def _executor_input(compiled: Compiled, task_id: str, root, upstream_metadata: dict) -> dict:
    """The ExecutorInput KFP 2.x's driver would give `task_id`, its one input written already."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2 as pb

    task, component = compiled.tasks[task_id], compiled.components[task_id]
    executor_input = pb.ExecutorInput()
    inputs = executor_input.inputs
    for name in task["inputs"]["parameters"]:
        json_format.ParseDict(_constant(task, name), inputs.parameter_values[name])
    for name, ref in task["inputs"]["artifacts"].items():
        producer = ref["taskOutputArtifact"]["producerTask"]
        key = ref["taskOutputArtifact"]["outputArtifactKey"]
        schema = compiled.components[producer]["outputDefinitions"]["artifacts"][key]
        artifact = inputs.artifacts[name].artifacts.add(
            name="41", uri=str(root / producer / key),
            type=pb.ArtifactTypeSchema(instance_schema=schema["artifactType"]["instanceSchema"]))
        json_format.ParseDict(upstream_metadata, artifact.metadata)
    outputs = executor_input.outputs
    for name, spec in component["outputDefinitions"]["artifacts"].items():
        outputs.artifacts[name].artifacts.add(
            uri=str(root / task_id / name),
            type=pb.ArtifactTypeSchema(instance_schema=spec["artifactType"]["instanceSchema"]))
    outputs.output_file = str(root / "kfp_outputs" / "output_metadata.json")
    return json_format.MessageToDict(executor_input)


def test_vela_step_runs_from_its_compiled_container_command(demo, int8_tflite, tmp_path):
    from collabopt.components.core.vela import parse_summary_csv

    root = tmp_path / "pipeline_root"
    tflite_dir = root / "TFLiteConverter_ptq" / keys.TFLITE_MODEL_KEY
    tflite_dir.mkdir(parents=True)
    (tflite_dir / artifact_types.TFLITE_FILE_NAME).write_bytes(int8_tflite)
    # The converter's custom properties, as KFP hands them on: JSON values, numbers as floats.
    upstream = {artifact_types.TECHNIQUE_PATH: "base", artifact_types.QUANTIZATION: "int8",
                artifact_types.TFLITE_BYTES: float(len(int8_tflite))}
    executor_input = _executor_input(demo, VELA_STEP, root, upstream)

    container = demo.executor(VELA_STEP)["container"]
    argv = [json.dumps(executor_input) if a == "{{$}}" else a
            for a in container["command"] + container["args"]]
    assert argv[0] == "python"
    argv[0] = sys.executable
    # As in the image: the installed project on sys.path, a working directory of its own.
    env = dict(os.environ, PYTHONPATH=REPO, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    workdir = tmp_path / "home"
    workdir.mkdir()
    proc = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]

    vela_uri = root / VELA_STEP / keys.VELA_MODEL_KEY
    compiled_tflite = (vela_uri / artifact_types.VELA_TFLITE_FILE_NAME).read_bytes()
    assert compiled_tflite[4:8] == b"TFL3" and b"ethos-u" in compiled_tflite
    summary = parse_summary_csv(str(vela_uri / artifact_types.VELA_SUMMARY_FILE_NAME))
    assert summary.cycles > 0 and summary.npu_ops > 0

    output = json.loads((root / "kfp_outputs" / "output_metadata.json").read_text())
    (artifact,) = output["artifacts"][keys.VELA_MODEL_KEY]["artifacts"]
    assert artifact["uri"] == str(vela_uri)
    metadata = artifact["metadata"]
    task = demo.tasks[VELA_STEP]
    assert metadata[artifact_types.TARGET] == _constant(task, keys.ACCELERATOR_CONFIG_KEY)
    assert json.loads(metadata[artifact_types.PARAMETERS]) == {
        name: _constant(task, name) for name in task["inputs"]["parameters"]}
    assert metadata[artifact_types.CYCLES] == summary.cycles
    assert metadata[artifact_types.INFERENCE_MS] == pytest.approx(summary.inference_ms)
    assert metadata[artifact_types.NPU_OPS] == summary.npu_ops
    # Read from the input artifact's KFP metadata and carried on.
    assert metadata[artifact_types.TECHNIQUE_PATH] == "base"
    assert metadata[artifact_types.QUANTIZATION] == "int8"
