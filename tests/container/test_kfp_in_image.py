"""Every step of the compiled pipeline, run in the built image as Kubeflow Pipelines v2 would run it.

`collabopt compile` the small demo config (two leaves, one target, one fine-tuning epoch), then
`kfp_harness.run_pipeline` runs every task of the spec in DAG order, each in its own container of
the image built by scripts/build-image, as the image's user, with the spec's exact command and
arguments and the ExecutorInput KFP v2's driver would build; artifacts live under a `gs://` pipeline
root whose bucket is a host folder mounted where KFP's launcher maps it (`/gcs/<bucket>`). What
stands in for KFP's driver, launcher and importer is said in kfp_harness's docstring.

The same config, run locally with `collabopt run`, must select the same leaf, and on the store the
harness writes in KFP's ML Metadata layout `collabopt runs`, `leaves`, `lineage --selected` and
`report` (real processes) must show the same leaves, selected leaf, lineage steps and main line as
on the local run's store. With COLLABOPT_RECORD_KFP_RUN=<file> the run is also saved as JSON (what
test_kfp_store.py replays).
Deselect with `-m "not container"`; skipped only where no container engine can be installed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from collabopt.components import types as t
from tests.container import kfp_harness
from tests.pipelines.conftest import write_small_config

pytestmark = [pytest.mark.container, pytest.mark.e2e]

BUCKET = "gs://collabopt-test"
COLLABOPT = os.path.join(os.path.dirname(sys.executable), "collabopt")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([COLLABOPT, *args], capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, f"collabopt {' '.join(args)}:\n{proc.stderr[-4000:]}"
    return proc


def _writable_dir(path) -> str:
    """A host folder the image's user (uid 10001) can write, as a bucket or volume would be."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o777)
    return str(path)


class KfpInImage:
    def __init__(self, root, image: str, engine: kfp_harness.ContainerEngine):
        self.image = image
        self.engine = engine
        self.local_config = write_small_config(str(root / "local"))
        with open(self.local_config) as f:
            raw = yaml.safe_load(f)
        # The same config, but for the cluster: the pipeline root in a bucket; the Examples
        # (read-only) and the Pusher's destination are volumes at the same path in every step.
        self.examples = os.path.join(os.path.dirname(self.local_config), raw["data"]["examples"])
        self.bucket_dir = _writable_dir(root / "bucket")
        self.serving_dir = _writable_dir(root / "kfp-serving")
        raw.update(pipeline_root=f"{BUCKET}/root", serving_dir=self.serving_dir,
                   data={**raw["data"], "examples": self.examples})
        os.makedirs(root / "kfp")
        self.kfp_config = str(root / "kfp" / "pipeline.yaml")
        with open(self.kfp_config, "w") as f:
            yaml.safe_dump(raw, f, sort_keys=False)
        self.job_path = str(root / "kfp" / "pipeline.json")
        self.log_dir = str(root / "kfp" / "logs")
        self.store_path = str(root / "kfp" / "kfp-metadata.sqlite")
        self.timings: dict[str, float] = {}

    def compile(self) -> dict:
        _cli("compile", self.kfp_config, "--out", self.job_path, "--image", self.image)
        with open(self.job_path) as f:
            return json.load(f)

    def run_in_containers(self, job: dict) -> kfp_harness.PipelineRun:
        started = time.monotonic()
        run = kfp_harness.run_pipeline(
            job, buckets={BUCKET: self.bucket_dir}, log_dir=self.log_dir, engine=self.engine,
            mounts=[(self.examples, self.examples, "ro"), (self.serving_dir, self.serving_dir, "rw")],
            run_id="kfp-in-image")
        self.timings["containers"] = time.monotonic() - started
        return run

    def run_locally(self) -> str:
        started = time.monotonic()
        _cli("run", self.local_config)
        self.timings["local"] = time.monotonic() - started
        return os.path.join(os.path.dirname(self.local_config), "metadata.sqlite")


@pytest.fixture(scope="module")
def kfp(tmp_path_factory, image, container_engine):
    """The compiled pipeline run in containers, and the same config run locally (once)."""
    case = KfpInImage(tmp_path_factory.mktemp("kfp-in-image"), image, container_engine)
    case.job = case.compile()
    case.run = case.run_in_containers(case.job)
    record = os.environ.get("COLLABOPT_RECORD_KFP_RUN")
    if record:  # what the steps reported, for tests/pipelines/data/kfp_run.json (see there)
        with open(record, "w") as f:
            json.dump(case.run.to_json(), f, indent=1, sort_keys=True)
    case.local_metadata = case.run_locally()
    print(f"\ncontainer run {case.timings['containers']:.0f} s ({len(case.run.tasks)} tasks: "
          + ", ".join(f"{r.task} {r.seconds:.0f}" for r in case.run.tasks)
          + f"), local run {case.timings['local']:.0f} s")
    return case


@pytest.fixture(scope="module")
def kfp_store(kfp):
    """The harness's run written into a fresh SQLite store in KFP v2's ML Metadata layout."""
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    config = metadata.sqlite_metadata_connection_config(kfp.store_path)
    ids = kfp_harness.write_kfp_metadata(kfp.run, config)
    return metadata_store.MetadataStore(config), ids


def test_every_task_of_the_spec_ran_in_the_image(kfp):
    tasks = kfp.job["pipelineSpec"]["root"]["dag"]["tasks"]
    assert [r.task for r in kfp.run.tasks] == kfp_harness.topological_order(tasks)
    executors = kfp.job["pipelineSpec"]["deploymentSpec"]["executors"]
    containers = [e["container"] for e in executors.values() if "container" in e]
    assert containers and all(c["image"] == kfp.image for c in containers)
    for task in kfp.run.tasks:
        assert task.execution_type == "system.ContainerExecution", task.task
        assert task.image == kfp.image
        assert task.outputs, f"{task.task} recorded no output artifact"


def test_steps_ran_as_the_images_non_root_user(kfp):
    proc = subprocess.run([*kfp.engine.command, "image", "inspect", "--format",
                           "{{.Config.User}}", kfp.image], capture_output=True, text=True,
                          env=dict(os.environ, **kfp.engine.env), timeout=60)
    assert proc.stdout.strip() == "10001:10001"
    owners = set()
    for directory, _, files in os.walk(os.path.join(kfp.bucket_dir, "root")):
        owners.update(os.stat(os.path.join(directory, f)).st_uid for f in files)
    if os.geteuid() == 0:  # a rootful engine: container uids are host uids
        assert owners == {10001}, owners
    else:  # rootless: the container's root is this user; the steps' files must not be its
        assert owners and os.geteuid() not in owners, owners


def test_artifacts_live_under_the_bucket_at_the_launchers_paths(kfp):
    run_root = f"{BUCKET}/root/{kfp.run.pipeline_name}/{kfp.run.run_id}/"
    for artifact in kfp.run.artifacts():
        assert artifact.uri.startswith(run_root), artifact.uri
        local = kfp_harness.local_path_for_uri(artifact.uri)
        host = os.path.join(kfp.bucket_dir, local[len("/gcs/collabopt-test/"):])
        written = os.path.isdir(host) and bool(os.listdir(host))
        assert written or artifact.type_name == "tfx.ModelRun", (
            f"{artifact.type_name} {artifact.uri}: nothing written at {host}")


def test_the_selected_leaf_is_the_one_a_local_run_selects(kfp):
    from collabopt.pipelines.metadata.read import read_leaves

    local = [r.path for r in read_leaves(kfp.local_metadata) if r.selected]
    blessing = kfp.run.task("Selector").outputs["blessing"].properties()
    assert local, "the local run selected no leaf: loosen the thresholds of the small config"
    assert blessing[t.SELECTED_PATH] == local[0]
    assert blessing[t.BLESSED] == 1
    # The stock Pusher in the image pushed the selected leaf's model.
    pushed = kfp.run.task("Pusher").outputs["pushed_model"].properties()
    assert pushed.get("pushed") == 1, pushed
    assert os.listdir(kfp.serving_dir)


def _readers(metadata: str, report_dir: str) -> dict:
    """What `collabopt runs`, `leaves`, `lineage --selected` and `report` show, as real processes."""
    from tests.pipelines.test_report import _parse

    shown = {what: json.loads(_cli(what, "--metadata", metadata, *args, "--json").stdout)
             for what, args in (("runs", ()), ("leaves", ()), ("lineage", ("--selected",)))}
    _cli("report", "--metadata", metadata, "--out", report_dir)
    shown["report"] = _parse(os.path.join(report_dir, "index.html"))
    return shown


def _chain(metadata: str) -> list[tuple[str, str]]:
    """The selected leaf's main line, from its .tflite back to the base model: (type, path)."""
    from collabopt.pipelines.metadata.read import read_leaves, read_lineage

    (leaf,) = [r for r in read_leaves(metadata) if r.selected]
    chain = read_lineage(metadata, leaf.tflite_id).chain()
    return [(a.type, a.properties.get(t.TECHNIQUE_PATH)) for a in chain]


def test_readers_show_on_kfps_store_what_they_show_for_the_local_run(kfp, kfp_store, tmp_path):
    local = _readers(kfp.local_metadata, str(tmp_path / "local-report"))
    remote = _readers(kfp.store_path, str(tmp_path / "kfp-report"))

    # runs: the one KFP run, complete, with the local run's selection.
    (run,) = remote["runs"]
    assert (run["run_id"], run["state"], run["pipeline"]) == (
        kfp.run.run_id, "complete", kfp.run.pipeline_name)
    assert run["selected"] == local["runs"][-1]["selected"] and run["leaves"] == 2
    assert run["executions"] == len(kfp.run.tasks)

    # leaves: the same leaves with every figure, ints as ints, the same one selected.
    local_leaves = {r["path"]: r for r in local["leaves"]}
    remote_leaves = {r["path"]: r for r in remote["leaves"]}
    assert set(remote_leaves) == set(local_leaves) and len(local_leaves) == 2
    for path, expected in local_leaves.items():
        got = remote_leaves[path]
        for field, value in expected.items():
            if value is not None and field not in ("evaluation_id", "tflite_id", "uri"):
                assert got[field] is not None, f"{path}: {field} missing from KFP's records"
            if isinstance(value, int) and not isinstance(value, bool):
                assert isinstance(got[field], int), f"{path}: {field} is {got[field]!r}"
        assert got["selected"] == expected["selected"], path
        assert len(got["vela"]) == len(expected["vela"]) == 1
        for field, value in expected["vela"][0].items():
            if value is not None:
                assert got["vela"][0][field] is not None, f"{path}: vela {field} missing"
                assert type(got["vela"][0][field]) is type(value), f"{path}: vela {field}"
        assert got["uri"].startswith(BUCKET), got["uri"]
    # Same architecture, same conversion: the baseline's int8 flatbuffer has the same size.
    assert remote_leaves["ptq"]["tflite_bytes"] == pytest.approx(
        local_leaves["ptq"]["tflite_bytes"], rel=0.01)

    # lineage --selected: the Selector's model, the same steps, the same main line to the base.
    local_root = {a["id"]: a for a in local["lineage"]["artifacts"]}[local["lineage"]["root"]]
    remote_root = {a["id"]: a for a in remote["lineage"]["artifacts"]}[remote["lineage"]["root"]]
    assert remote_root["type"] == local_root["type"] == "Model"
    assert remote_root["properties"][t.SELECTED_PATH] == local_root["properties"][t.SELECTED_PATH]
    assert remote["lineage"]["run"] == kfp.run.run_id
    assert set(remote["lineage"]["node_ids"]) == set(local["lineage"]["node_ids"])
    assert _chain(kfp.store_path) == _chain(kfp.local_metadata)
    # Each step's parameters: what the local run recorded, as KFP's driver recorded them; only
    # what TFX's ImportExampleGen driver adds locally (span, version, fingerprint) KFP has not.
    local_steps = {e["node_id"]: e for e in local["lineage"]["executions"]}
    for execution in remote["lineage"]["executions"]:
        expected = local_steps[execution["node_id"]]["parameters"]
        got = execution["parameters"]
        assert set(got) <= set(expected), execution["node_id"]
        assert set(expected) - set(got) <= {"span", "version", "input_fingerprint"}
        assert got == {k: expected[k] for k in got}, execution["node_id"]

    # report: the same leaves table, the same selected row, the same lineage steps.
    for page in (local["report"], remote["report"]):
        page.leaves = [row[0] for row in page.tables["leaves"][1:] if row and row[0]]
        page.selected = [row[0] for row in page.tables["leaves"] if row and row[-1] == "SELECTED"]
        page.nodes = {row[0].split()[0] for row in page.tables["lineage"][1:]}
    assert remote["report"].leaves == local["report"].leaves
    assert remote["report"].selected == local["report"].selected == [run["selected"]]
    assert remote["report"].nodes == local["report"].nodes


def test_store_is_in_kfp_v2_launcher_layout(kfp, kfp_store):
    from ml_metadata.proto import metadata_store_pb2 as mlmd_pb

    store, ids = kfp_store
    (pipeline,) = store.get_contexts_by_type("system.Pipeline")
    (run_context,) = store.get_contexts_by_type("system.PipelineRun")
    assert pipeline.name == kfp.run.pipeline_name and run_context.name == kfp.run.run_id
    assert [c.id for c in store.get_parent_contexts_by_context(run_context.id)] == [pipeline.id]
    assert run_context.custom_properties["pipeline_root"].string_value == kfp.run.run_root

    (dag,) = store.get_executions_by_type("system.DAGExecution")
    assert dag.name == f"run/{kfp.run.run_id}"
    executions = store.get_executions_by_type("system.ContainerExecution")
    by_task = {e.custom_properties["task_name"].string_value: e for e in executions}
    assert set(by_task) == {r.task for r in kfp.run.tasks}
    assert {e.id for e in store.get_executions_by_context(run_context.id)} >= {
        e.id for e in executions}
    for execution in executions:
        assert execution.last_known_state == mlmd_pb.Execution.COMPLETE
        assert execution.custom_properties["parent_dag_id"].int_value == dag.id
        assert execution.custom_properties["image"].string_value == kfp.image

    type_names = {at.name for at in store.get_artifact_types()}
    assert {"tfx.Examples", "tfx.Model", "collabopt.TFLiteModel", "collabopt.VelaModel",
            "tfx.ModelEvaluation", "tfx.ModelBlessing"} <= type_names

    # Lineage edges: the Vela step's input is the converter's output, under the input's key.
    vela_task = next(r for r in kfp.run.tasks if r.task.startswith("VelaCompiler_ptq"))
    converter_output = kfp.run.task("TFLiteConverter_ptq").outputs["tflite_model"]
    events = store.get_events_by_execution_ids([by_task[vela_task.task].id])
    inputs = [(e.path.steps[0].key, e.artifact_id) for e in events if e.type == mlmd_pb.Event.INPUT]
    assert inputs == [("tflite_model", ids[converter_output.id])]
    (vela_artifact,) = store.get_artifacts_by_id(
        [e.artifact_id for e in events if e.type == mlmd_pb.Event.OUTPUT])
    assert vela_artifact.custom_properties[t.CYCLES].double_value > 0
    assert vela_artifact.custom_properties["display_name"].string_value == "vela_model"
