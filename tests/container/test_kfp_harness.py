"""kfp_harness without containers: the emulated importer, the driver's ExecutorInput as TFX's step
entrypoint parses it, and the importer's record in KFP's ML Metadata layout.

The container test (test_kfp_in_image.py) trains its base model with a Trainer; this one compiles a
config whose base model is imported from a bucket, the Importer path KFP runs in its own launcher.
"""
from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from collabopt.components import keys
from tests.container import kfp_harness

BUCKET = "gs://collabopt-test"
MODEL_URI = f"{BUCKET}/models/digits_cnn"


@pytest.fixture(scope="module")
def harness_run(tmp_path_factory):
    from click.testing import CliRunner

    from collabopt.pipelines.cli import main
    from collabopt.pipelines.demo.setup import demo_config

    workdir = tmp_path_factory.mktemp("harness")
    raw = demo_config()
    raw.update(leaves=["ptq", "prune>ptq"], targets=[{"accelerator_config": "ethos-u55-128"}],
               pipeline_root=f"{BUCKET}/root", base_model={"path": MODEL_URI},
               data={**raw["data"], "examples": str(workdir / "examples")})
    config = workdir / "pipeline.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = workdir / "pipeline.json"
    result = CliRunner().invoke(main, ["compile", str(config), "--out", str(out), "--image",
                                       "collabopt:test"])
    assert result.exit_code == 0, (result.output, result.exception)
    job = json.loads(out.read_text())
    return kfp_harness._Run(job, kfp_harness.ContainerEngine(), {BUCKET: str(workdir / "bucket")},
                            [], str(workdir / "logs"), "run-1", timeout=60)


def _task(run, name):
    task = run.spec["root"]["dag"]["tasks"][name]
    return task, run.spec["components"][task["componentRef"]["name"]]


def test_launcher_paths_are_kfps():
    assert kfp_harness.local_path_for_uri("gs://b/x/y") == "/gcs/b/x/y"
    assert kfp_harness.local_path_for_uri("minio://mlpipeline/a") == "/minio/mlpipeline/a"
    assert kfp_harness.local_path_for_uri("s3://b/a") == "/s3/b/a"
    assert kfp_harness.uri_for_local_path("/gcs/b/x/y") == "gs://b/x/y"
    with pytest.raises(kfp_harness.HarnessError, match="unsupported storage scheme"):
        kfp_harness.local_path_for_uri("/data/model")


def test_importer_records_the_uri_type_and_session_info(harness_run):
    task, component = _task(harness_run, "BaseModelImporter")
    imported = harness_run.run_task("BaseModelImporter")
    harness_run.run.tasks.append(imported)
    assert imported.execution_type == "system.ImporterExecution" and imported.image is None
    (artifact,) = imported.outputs.values()
    assert artifact.uri == MODEL_URI and artifact.type_name == "tfx.Model"
    assert json.loads(artifact.properties()["store_session_info"])["Provider"] == "gs"


def test_step_entrypoint_parses_the_driver_input(harness_run):
    """What TFX's kubeflow_v2_run_executor does with the ExecutorInput the harness gives the Pruner."""
    from kfp.pipeline_spec import pipeline_spec_pb2 as pb
    from google.protobuf import json_format
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as entry
    from tfx.types import standard_artifacts

    if not any(t.task == "BaseModelImporter" for t in harness_run.run.tasks):
        harness_run.run.tasks.append(harness_run.run_task("BaseModelImporter"))
    harness_run.run.tasks.append(kfp_harness.TaskRun(  # ImportExampleGen's recorded output
        "ImportExampleGen", "system.ContainerExecution", "collabopt:test", {}, {}, {},
        {"examples": harness_run.record(f"{BUCKET}/root/examples",
                                        "title: tfx.Examples\ntype: object\n", {})}, {}, 0.0))
    # Task ids carry the levels (Pruner_prune50): take the first Pruner of the spec.
    pruner = min(n for n in harness_run.spec["root"]["dag"]["tasks"] if n.startswith("Pruner_"))
    task, component = _task(harness_run, pruner)
    driver_input = harness_run.executor_input(pruner, task, component)
    view = harness_run.container_view(driver_input)

    executor = harness_run.spec["deploymentSpec"]["executors"][component["executorLabel"]]
    args = executor["container"]["args"]
    inputs_spec = json_format.Parse(args[args.index("--json_serialized_inputs_spec_args") + 1],
                                    pb.ComponentInputsSpec())
    names = {}
    inputs = entry.parse_raw_artifact_dict(view.inputs.artifacts, names)
    outputs = entry.parse_raw_artifact_dict(view.outputs.artifacts, names)
    params = entry.parse_execution_properties(view.inputs.parameter_values,
                                              view.inputs.parameters, inputs_spec)
    (model,) = inputs[keys.MODEL_KEY]
    assert isinstance(model, standard_artifacts.Model)
    assert model.uri == "/gcs/collabopt-test/models/digits_cnn"  # the launcher's local path
    assert names[model.id] == str(harness_run.run.task("BaseModelImporter").outputs["result"].id)
    constants = {k: v["runtimeValue"]["constant"] for k, v in task["inputs"]["parameters"].items()}
    assert params[keys.TARGET_SPARSITY_KEY] == constants[keys.TARGET_SPARSITY_KEY]
    assert isinstance(params[keys.MAX_EPOCHS_KEY], int)  # NUMBER_INTEGER comes back as int
    (optimized,) = outputs[keys.OPTIMIZED_MODEL_KEY]
    assert re.fullmatch(r"/gcs/collabopt-test/root/[\w-]+/run-1/" + pruner + "/[0-9a-f-]{36}/"
                        + keys.OPTIMIZED_MODEL_KEY, optimized.uri), optimized.uri
    assert os.path.dirname(view.outputs.output_file) == os.path.dirname(optimized.uri)
    # The record keeps the remote URIs the driver provisioned.
    remote = driver_input.outputs.artifacts[keys.OPTIMIZED_MODEL_KEY].artifacts[0].uri
    assert kfp_harness.local_path_for_uri(remote) == optimized.uri


def test_importer_run_is_written_in_kfps_layout(harness_run, tmp_path):
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    if not any(t.task == "BaseModelImporter" for t in harness_run.run.tasks):
        harness_run.run.tasks.append(harness_run.run_task("BaseModelImporter"))
    run = kfp_harness.PipelineRun(harness_run.run.pipeline_name, "run-1",
                                  harness_run.pipeline_root,
                                  [harness_run.run.task("BaseModelImporter")])
    config = metadata.sqlite_metadata_connection_config(str(tmp_path / "kfp.sqlite"))
    kfp_harness.write_kfp_metadata(run, config)
    store = metadata_store.MetadataStore(config)
    (execution,) = store.get_executions_by_type("system.ImporterExecution")
    assert execution.custom_properties["task_name"].string_value == "BaseModelImporter"
    (run_context,) = store.get_contexts_by_type("system.PipelineRun")
    (artifact,) = store.get_artifacts_by_context(run_context.id)
    assert artifact.uri == MODEL_URI
    assert store.get_artifact_types_by_id([artifact.type_id])[0].name == "tfx.Model"
