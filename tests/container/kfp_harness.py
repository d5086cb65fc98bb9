"""Runs a compiled Kubeflow Pipelines v2 spec locally: every task in its own container, as KFP
v2 would, without a cluster.

Input: the PipelineJob JSON that `collabopt compile` writes (TFX's KubeflowV2DagRunner), whose
pipeline root (`runtimeConfig.gcsOutputDirectory`) is a `gs://`, `minio://` or `s3://` URI, and a
host folder standing in for each bucket. Output: a `PipelineRun` with, per task, the ExecutorInput
it was given and the artifacts KFP would have recorded from its ExecutorOutput;
`write_kfp_metadata` puts that into an ML Metadata store in the layout KFP v2 writes.

What stands in for which part of KFP (kubeflow/pipelines, backend/src/v2/, release 2.17):

- **Argo / the DAG driver**: `run_pipeline` runs the tasks one after another in DAG order
  (`dependentTasks`), each in a fresh container of its image. No caching, no retries, no
  `triggerPolicy` conditions (a task with one is refused: exhaustive mode only).
- **The container driver** (`driver/container.go`, `driver/resolve.go`, `driver/driver.go:
  provisionOutputs`, `metadata/client.go: GenerateOutputURI, GetPipeline`):
  `_Run.executor_input` builds the ExecutorInput from the spec alone — parameters from the task's
  `runtimeValue.constant`s; input artifacts from the producer's recorded outputs as the driver
  reads them back from MLMD (`metadata/converter.go: toRuntimeArtifact`: `name` is the artifact
  id, `metadata` its custom properties with numbers as doubles, and the `display_name` /
  `store_session_info` the launcher added); output URIs
  `<root>/<pipeline>/<run id>/<task>/<uuid>/<key>`; `outputFile` the launcher's local path of
  that task root + `output_metadata.json`.
- **The launcher** (`component/launcher_v2.go`): `_Run.run_container` substitutes `{{$}}`,
  mounts each bucket folder where `LocalPathForURI` maps it (`gs://b/...` -> `/gcs/b/...`,
  `minio://` -> `/minio/`, `s3://` -> `/s3/`), runs the spec's exact `command` and `args` in the
  image as the image's own user, then reads the ExecutorOutput file and merges it into the
  output artifacts (`mergeRuntimeArtifacts`) and records them (`metadata/client.go:
  RecordArtifact`, `metadata/converter.go: toMLMDArtifact`).
  The step itself is TFX's entrypoint (`tfx/orchestration/kubeflow/v2/container/
  kubeflow_v2_run_executor.py`, `kubeflow_v2_entrypoint_utils.py`): it hashes each artifact's
  `name` into a TFX id, turns `metadata` into custom properties, and writes the output artifacts'
  properties (ints as doubles) into `outputs.outputFile`.
  One deliberate difference: KFP hands the step the remote URIs and copies the launcher's local
  paths to and from the bucket around it; TFX's entrypoint reads `artifact.uri` itself, through
  TensorFlow's GCS/S3 clients, which cannot reach a bucket from here. So the ExecutorInput given
  to the container carries the launcher's *local* path as each artifact's `uri` (what a GCS FUSE
  mount at `/gcs` serves), and the harness maps the URIs the step reports back to the remote form
  before recording them. Properties a step writes that hold a URI (e.g. `tflite_uri`) therefore
  hold the local path. Plain parameters (the Examples folder, the Pusher's destination) are not
  artifacts and are passed unchanged: mount them at the same path (`mounts`).
- **The importer** (`component/importer_launcher.go`): runs in KFP's own launcher image, not in
  ours, so `_Run.import_artifact` emulates it in-process: an artifact with the spec's
  `artifactUri`, type and `metadata`, plus `store_session_info`, from a `system.ImporterExecution`.
- **TFX's ImportExampleGen driver**: TFX compiles it as the executor's `lifecycle.preCacheCheck`
  (`tfx/orchestration/kubeflow/v2/file_based_example_gen/driver.py`), which Vertex AI runs before
  the executor and the open-source KFP backend does not run at all. The harness runs it in the
  image before the executor, with the same ExecutorInput; it writes span, version and fingerprint
  into the output file, which TFX's entrypoint (`kubeflow_v2_run_executor.py: _run_executor`)
  reads back as parameters.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
import uuid
from typing import Any, Mapping, Optional, Sequence

import yaml
from google.protobuf import json_format, struct_pb2
from kfp.pipeline_spec import pipeline_spec_pb2 as pb
from ml_metadata.proto import metadata_store_pb2 as mlmd_pb

# component/launcher_v2.go: LocalPathForURI.
LAUNCHER_LOCAL_PATHS = {"gs://": "/gcs/", "minio://": "/minio/", "s3://": "/s3/"}
EXECUTOR_INPUT_PLACEHOLDER = "{{$}}"
OUTPUT_METADATA_FILE = "output_metadata.json"  # driver/driver.go: provisionOutputs


class HarnessError(RuntimeError):
    """A task failed, or the spec asks for something this stand-in for KFP does not do."""


def local_path_for_uri(uri: str) -> str:
    """The path KFP's launcher uses for a remote URI inside the step's container."""
    for scheme, prefix in LAUNCHER_LOCAL_PATHS.items():
        if uri.startswith(scheme):
            return prefix + uri[len(scheme):]
    raise HarnessError(f"failed to generate local path for URI {uri}: unsupported storage scheme "
                       "(KFP's launcher maps only gs://, minio://, s3://)")


def uri_for_local_path(path: str) -> str:
    """The inverse of local_path_for_uri; other paths are returned unchanged."""
    for scheme, prefix in LAUNCHER_LOCAL_PATHS.items():
        if path.startswith(prefix):
            return scheme + path[len(prefix):]
    return path


def generate_output_uri(root: str, *paths: str) -> str:
    """metadata/client.go: GenerateOutputURI (no query strings here)."""
    return root.rstrip("/") + "/" + "/".join(p.strip("/") for p in paths)


def schema_title(instance_schema: str) -> str:
    """metadata/client.go: SchemaToArtifactType: the MLMD artifact type is the schema's title."""
    return yaml.safe_load(instance_schema)["title"]


def store_session_info(uri: str) -> str:
    """objectstore.SessionInfo as the importer and RecordArtifact marshal it (credentials from the
    environment, the default for a pipeline root without a kfp-launcher provider config)."""
    provider = uri.split("://", 1)[0]
    return json.dumps({"Provider": provider, "Params": {"fromEnv": "true"}}, separators=(",", ":"))


# --------------------------------------------------------------------------- value conversions
def mlmd_value(value: struct_pb2.Value) -> mlmd_pb.Value:
    """metadata/converter.go: StructValueToMLMDValue (executor output metadata -> MLMD)."""
    kind = value.WhichOneof("kind")
    out = mlmd_pb.Value()
    if kind == "string_value":
        out.string_value = value.string_value
    elif kind == "number_value":
        out.double_value = value.number_value
    elif kind == "bool_value":
        out.int_value = int(value.bool_value)
    elif kind == "list_value":
        out.struct_value.fields["list"].list_value.CopyFrom(value.list_value)
    elif kind == "struct_value":
        out.struct_value.fields["struct"].struct_value.CopyFrom(value.struct_value)
    else:
        raise HarnessError(f"unknown/unsupported value type {kind}")
    return out


def metadata_value(value: mlmd_pb.Value) -> struct_pb2.Value:
    """metadata/converter.go: toRuntimeArtifact (MLMD -> the metadata a downstream step gets)."""
    kind = value.WhichOneof("value")
    out = struct_pb2.Value()
    if kind == "string_value":
        out.string_value = value.string_value
    elif kind == "double_value":
        out.number_value = value.double_value
    elif kind == "int_value":
        out.number_value = float(value.int_value)
    elif kind == "struct_value":
        out.struct_value.CopyFrom(value.struct_value)
    else:
        raise HarnessError(f"unknown property type in MLMD artifact: {kind}")
    return out


# --------------------------------------------------------------------------- what a run records
@dataclasses.dataclass
class RecordedArtifact:
    """An artifact as KFP records it in MLMD: its id there, remote URI, type and custom properties."""

    id: int
    uri: str
    instance_schema: str
    custom_properties: dict[str, mlmd_pb.Value]

    @property
    def type_name(self) -> str:
        return schema_title(self.instance_schema)

    def properties(self) -> dict[str, Any]:
        """The custom properties as plain Python values (numbers are doubles, as in KFP)."""
        return {k: json_format.MessageToDict(metadata_value(v)) for k, v in self.custom_properties.items()}

    def runtime_artifact(self) -> pb.RuntimeArtifact:
        """How the driver hands this artifact to a downstream task (toRuntimeArtifact)."""
        artifact = pb.RuntimeArtifact(name=str(self.id), uri=self.uri,
                                      type=pb.ArtifactTypeSchema(instance_schema=self.instance_schema))
        for key, value in self.custom_properties.items():
            artifact.metadata.fields[key].CopyFrom(metadata_value(value))
        return artifact


@dataclasses.dataclass
class TaskRun:
    task: str
    execution_type: str                      # system.ContainerExecution / system.ImporterExecution
    image: Optional[str]
    executor_input: dict[str, Any]           # as KFP's driver builds it (remote URIs)
    parameters: dict[str, Any]               # ExecutorInput.inputs.parameterValues
    inputs: dict[str, list[int]]             # input key -> artifact ids
    outputs: dict[str, RecordedArtifact]     # output key -> recorded artifact
    output_parameters: dict[str, Any]
    seconds: float
    log: Optional[str] = None


@dataclasses.dataclass
class PipelineRun:
    pipeline_name: str
    run_id: str
    pipeline_root: str                       # as configured (runtimeConfig.gcsOutputDirectory)
    tasks: list[TaskRun]

    @property
    def run_root(self) -> str:
        """The run's own root, as the driver's GetPipeline records it on the run context."""
        return generate_output_uri(self.pipeline_root, self.pipeline_name, self.run_id)

    def task(self, name: str) -> TaskRun:
        return next(t for t in self.tasks if t.task == name)

    def artifacts(self, type_name: Optional[str] = None) -> list[RecordedArtifact]:
        found = [a for t in self.tasks for a in t.outputs.values()]
        return [a for a in found if type_name is None or a.type_name == type_name]

    # A run is saved as JSON so that what the steps reported can be written into a store again
    # without running them (tests/pipelines/data/kfp_run.json, replayed by the fast KFP-store test).
    def to_json(self) -> dict[str, Any]:
        tasks = []
        for task in self.tasks:
            data = dataclasses.asdict(task)
            data["outputs"] = {key: {"id": a.id, "uri": a.uri, "instance_schema": a.instance_schema,
                                     "custom_properties": {k: json_format.MessageToDict(v)
                                                           for k, v in a.custom_properties.items()}}
                               for key, a in task.outputs.items()}
            data["log"] = None
            tasks.append(data)
        return {"pipeline_name": self.pipeline_name, "run_id": self.run_id,
                "pipeline_root": self.pipeline_root, "tasks": tasks}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "PipelineRun":
        tasks = []
        for task in data["tasks"]:
            outputs = {key: RecordedArtifact(
                a["id"], a["uri"], a["instance_schema"],
                {k: json_format.ParseDict(v, mlmd_pb.Value()) for k, v in a["custom_properties"].items()})
                for key, a in task["outputs"].items()}
            tasks.append(TaskRun(**{**task, "outputs": outputs,
                                    "inputs": {k: list(v) for k, v in task["inputs"].items()}}))
        return cls(data["pipeline_name"], data["run_id"], data["pipeline_root"], tasks)


# --------------------------------------------------------------------------- the run
@dataclasses.dataclass
class ContainerEngine:
    """How to start a container: `docker` or `podman`, plus the environment it needs."""

    command: Sequence[str] = ("podman",)
    env: Optional[Mapping[str, str]] = None
    extra_run_args: Sequence[str] = ("--network", "none")

    def run(self, name: str, image: str, command: Sequence[str], args: Sequence[str],
            mounts: Sequence[tuple[str, str, str]], log_path: str, timeout: float) -> int:
        argv = [*self.command, "run", "--rm", "--name", name, *self.extra_run_args]
        for host, container, mode in mounts:
            argv += ["--volume", f"{host}:{container}:{mode}"]
        # --entrypoint takes one executable in docker; the rest of the command leads the args.
        argv += ["--entrypoint", command[0], image, *command[1:], *args]
        env = dict(os.environ, **(self.env or {}))
        with open(log_path, "w") as log:
            try:
                return subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                subprocess.run([*self.command, "rm", "--force", name], env=env,
                               capture_output=True, timeout=120)
                raise


def _make_shared_dirs(path: str) -> None:
    """Creates the missing folders of `path`, writable by whatever user the image runs as (the
    harness runs on the host, possibly as another user than the step)."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        os.mkdir(directory)
        os.chmod(directory, 0o777)


def topological_order(tasks: Mapping[str, dict]) -> list[str]:
    """Tasks after every task they depend on; ties broken by name, so runs are repeatable."""
    done: list[str] = []
    waiting = dict(tasks)
    while waiting:
        ready = sorted(n for n, t in waiting.items()
                       if set(t.get("dependentTasks", [])) <= set(done))
        if not ready:
            raise HarnessError(f"the DAG has a cycle among {sorted(waiting)}")
        done.append(ready[0])
        del waiting[ready[0]]
    return done


class _Run:
    def __init__(self, job: dict, engine: ContainerEngine, buckets: Mapping[str, str],
                 mounts: Sequence[tuple[str, str, str]], log_dir: str, run_id: str,
                 timeout: float):
        self.spec = job["pipelineSpec"]
        self.engine = engine
        self.pipeline_root = job["runtimeConfig"]["gcsOutputDirectory"]
        local_path_for_uri(self.pipeline_root)  # refuses a root KFP's launcher cannot map
        # bucket URI prefix (gs://name) -> host folder; mounted at the launcher's local path.
        self.buckets = {uri.rstrip("/"): os.path.abspath(path) for uri, path in buckets.items()}
        self.mounts = [(h, local_path_for_uri(b), "rw") for b, h in self.buckets.items()]
        self.mounts += list(mounts)
        self.log_dir = log_dir
        self.timeout = timeout
        self.run = PipelineRun(self.spec["pipelineInfo"]["name"], run_id, self.pipeline_root, [])
        self.next_id = 1

    def host_path(self, local_path: str) -> str:
        """Where a path inside the step's container lives on this machine."""
        for host, container, _ in self.mounts:
            if local_path == container or local_path.startswith(container.rstrip("/") + "/"):
                return host + local_path[len(container.rstrip("/")):]
        raise HarnessError(f"{local_path} is in no mounted folder")

    def record(self, uri: str, instance_schema: str, props: Mapping[str, mlmd_pb.Value]) -> RecordedArtifact:
        artifact = RecordedArtifact(self.next_id, uri, instance_schema, dict(props))
        self.next_id += 1
        return artifact

    # ---- driver ----------------------------------------------------------------------------
    def executor_input(self, name: str, task: dict, component: dict) -> pb.ExecutorInput:
        executor_input = pb.ExecutorInput()
        inputs = executor_input.inputs
        for key, spec in task.get("inputs", {}).get("parameters", {}).items():
            if "runtimeValue" not in spec:
                raise HarnessError(f"{name}.{key}: only runtimeValue.constant parameters are resolved")
            json_format.ParseDict(spec["runtimeValue"]["constant"], inputs.parameter_values[key])
        for key, spec in task.get("inputs", {}).get("artifacts", {}).items():
            ref = spec["taskOutputArtifact"]
            producer = self.run.task(ref["producerTask"])
            artifact = producer.outputs[ref["outputArtifactKey"]]
            inputs.artifacts[key].artifacts.append(artifact.runtime_artifact())
        # driver.go: provisionOutputs
        task_root = generate_output_uri(self.run.run_root, name, str(uuid.uuid4()))
        outputs = executor_input.outputs
        for key, spec in component.get("outputDefinitions", {}).get("artifacts", {}).items():
            artifact = outputs.artifacts[key].artifacts.add(
                name=key, uri=generate_output_uri(task_root, key),
                type=pb.ArtifactTypeSchema(instance_schema=spec["artifactType"]["instanceSchema"]))
            if "metadata" in spec:
                json_format.ParseDict(spec["metadata"], artifact.metadata)
        for key in component.get("outputDefinitions", {}).get("parameters", {}):
            outputs.parameters[key].output_file = f"/tmp/kfp/outputs/{key}"
        outputs.output_file = os.path.join(local_path_for_uri(task_root), OUTPUT_METADATA_FILE)
        return executor_input

    # ---- launcher --------------------------------------------------------------------------
    def container_view(self, executor_input: pb.ExecutorInput) -> pb.ExecutorInput:
        """The ExecutorInput the step gets: artifact URIs as the launcher's local paths (see the
        module docstring for why), and parameter defaults added (launcher_v2.go: addDefaultParams)."""
        view = pb.ExecutorInput()
        view.CopyFrom(executor_input)
        for lists in (view.inputs.artifacts, view.outputs.artifacts):
            for artifact_list in lists.values():
                for artifact in artifact_list.artifacts:
                    artifact.uri = local_path_for_uri(artifact.uri)
        return view

    def add_defaults(self, executor_input: pb.ExecutorInput, component: dict) -> None:
        for key, spec in component.get("inputDefinitions", {}).get("parameters", {}).items():
            if key not in executor_input.inputs.parameter_values and "defaultValue" in spec:
                json_format.ParseDict(spec["defaultValue"], executor_input.inputs.parameter_values[key])

    def run_container(self, name: str, container: dict, executor_input: pb.ExecutorInput) -> None:
        """launcher_v2.go: compileCmdAndArgs, prepareOutputFolders, execute."""
        payload = json.dumps(json_format.MessageToDict(executor_input), separators=(",", ":"))
        steps = []
        hook = container.get("lifecycle", {}).get("preCacheCheck")
        if hook:
            steps.append(("driver", hook["command"], hook["args"]))
        steps.append(("executor", container["command"], container["args"]))
        # prepareOutputFolders creates the parents of the local paths; the artifact folders
        # themselves are implicit in an object store, and TFX's executors write into them.
        for artifact_list in executor_input.outputs.artifacts.values():
            for artifact in artifact_list.artifacts:
                _make_shared_dirs(self.host_path(artifact.uri))
        _make_shared_dirs(os.path.dirname(self.host_path(executor_input.outputs.output_file)))
        for step, command, args in steps:
            args = [payload if a == EXECUTOR_INPUT_PLACEHOLDER else a for a in args]
            unresolved = [a for a in list(command) + args if "{{$" in a and a != payload]
            if unresolved:
                raise HarnessError(f"{name}: placeholders this harness does not resolve: {unresolved}")
            log_path = os.path.join(self.log_dir, f"{name}.{step}.log")
            container_name = f"kfp-{self.run.run_id}-{name}-{step}".lower().replace("_", "-")
            code = self.engine.run(container_name, container["image"], command, args, self.mounts,
                                   log_path, self.timeout)
            if code != 0:
                with open(log_path) as f:
                    tail = f.read()[-4000:]
                raise HarnessError(f"task {name} ({step}) exited with {code}; log {log_path}:\n{tail}")

    def read_executor_output(self, executor_input: pb.ExecutorInput) -> pb.ExecutorOutput:
        """launcher_v2.go: getExecutorOutputFile (a missing file is an empty output)."""
        output = pb.ExecutorOutput()
        path = self.host_path(executor_input.outputs.output_file)
        if os.path.exists(path):
            with open(path) as f:
                json_format.Parse(f.read(), output)
        return output

    def record_outputs(self, executor_input: pb.ExecutorInput,
                       output: pb.ExecutorOutput) -> dict[str, RecordedArtifact]:
        """launcher_v2.go: uploadOutputArtifacts (mergeRuntimeArtifacts, RecordArtifact)."""
        recorded = {}
        for key, artifact_list in executor_input.outputs.artifacts.items():
            for artifact in artifact_list.artifacts:
                merged = pb.RuntimeArtifact()
                merged.CopyFrom(artifact)
                reported = output.artifacts.get(key)
                if reported is not None and reported.artifacts:
                    src = reported.artifacts[0]
                    if src.uri:
                        merged.uri = uri_for_local_path(src.uri)
                    for k, v in src.metadata.fields.items():
                        merged.metadata.fields[k].CopyFrom(v)
                props = {k: mlmd_value(v) for k, v in merged.metadata.fields.items()
                         if k != "_kfp_workspace"}
                props.setdefault("display_name", mlmd_pb.Value(string_value=key))
                props.setdefault("store_session_info",
                                 mlmd_pb.Value(string_value=store_session_info(self.pipeline_root)))
                recorded[key] = self.record(merged.uri, artifact.type.instance_schema, props)
        return recorded

    def run_task(self, name: str) -> TaskRun:
        task = self.spec["root"]["dag"]["tasks"][name]
        if "triggerPolicy" in task:
            raise HarnessError(f"task {name} has a triggerPolicy condition: this harness runs "
                               "exhaustive pipelines only (no conditions)")
        component = self.spec["components"][task["componentRef"]["name"]]
        executor = self.spec["deploymentSpec"]["executors"][component["executorLabel"]]
        started = time.monotonic()
        if "importer" in executor:
            return self.import_artifact(name, task, component, executor["importer"], started)
        if "container" not in executor:
            raise HarnessError(f"task {name}: executor kind {sorted(executor)} is not supported")
        executor_input = self.executor_input(name, task, component)
        view = self.container_view(executor_input)
        self.add_defaults(view, component)
        self.run_container(name, executor["container"], view)
        output = self.read_executor_output(view)
        return TaskRun(
            task=name, execution_type="system.ContainerExecution",
            image=executor["container"]["image"],
            executor_input=json_format.MessageToDict(executor_input),
            parameters=json_format.MessageToDict(executor_input.inputs)["parameterValues"]
            if executor_input.inputs.parameter_values else {},
            inputs={k: [int(a.name) for a in v.artifacts]
                    for k, v in executor_input.inputs.artifacts.items()},
            outputs=self.record_outputs(executor_input, output),
            output_parameters=json_format.MessageToDict(output).get("parameterValues", {}),
            seconds=time.monotonic() - started,
            log=os.path.join(self.log_dir, f"{name}.executor.log"))

    # ---- importer --------------------------------------------------------------------------
    def import_artifact(self, name: str, task: dict, component: dict, importer: dict,
                        started: float) -> TaskRun:
        """importer_launcher.go: ImportSpecToMLMDArtifact (reimport=False finds no earlier
        artifact in a fresh run, so a new one is recorded)."""
        uri_spec = importer["artifactUri"]
        if "constant" not in uri_spec:
            raise HarnessError(f"importer {name}: only a constant artifactUri is resolved")
        uri = uri_spec["constant"]
        local_path_for_uri(uri)  # ParseProviderFromPath: a URI with a storage scheme
        (key,) = component["outputDefinitions"]["artifacts"]
        props = {}
        for k, v in importer.get("metadata", {}).items():
            props[k] = mlmd_value(json_format.ParseDict(v, struct_pb2.Value()))
        props["store_session_info"] = mlmd_pb.Value(string_value=store_session_info(uri))
        schema = component["outputDefinitions"]["artifacts"][key]["artifactType"]["instanceSchema"]
        return TaskRun(task=name, execution_type="system.ImporterExecution", image=None,
                       executor_input={}, parameters={}, inputs={},
                       outputs={key: self.record(uri, schema, props)}, output_parameters={},
                       seconds=time.monotonic() - started)


def run_pipeline(job: dict, *, buckets: Mapping[str, str], log_dir: str,
                 engine: ContainerEngine = ContainerEngine(),
                 mounts: Sequence[tuple[str, str, str]] = (), run_id: Optional[str] = None,
                 timeout: float = 1800, progress=None) -> PipelineRun:
    """Runs every task of the compiled `job` in DAG order; raises HarnessError on the first
    failure. `buckets`: {"gs://bucket": host folder}; `mounts`: extra (host, container, "ro"/"rw")
    folders, e.g. the Examples at the path the spec names them by."""
    os.makedirs(log_dir, exist_ok=True)
    run = _Run(job, engine, buckets, mounts, log_dir, run_id or f"run-{uuid.uuid4().hex[:8]}",
               timeout)
    for name in topological_order(run.spec["root"]["dag"]["tasks"]):
        task_run = run.run_task(name)
        run.run.tasks.append(task_run)
        if progress:
            progress(task_run)
    return run.run


# --------------------------------------------------------------------------- KFP's MLMD layout
def write_kfp_metadata(run: PipelineRun, connection_config: mlmd_pb.ConnectionConfig,
                       namespace: str = "local",
                       end: Optional[tuple[str, int]] = None) -> dict[int, int]:
    """Records `run` in an ML Metadata store the way KFP v2 does (backend/src/v2/metadata/
    client.go: GetPipeline, CreateExecution, PublishExecution, RecordArtifact):

    - contexts `system.Pipeline` (named by the pipeline) and `system.PipelineRun` (named by the run
      id, with `namespace`, `resource_name`, `pipeline_root`, `store_session_info`), the run a
      child of the pipeline;
    - a `system.DAGExecution` named `run/<run id>` for the root DAG (`driver/root_dag.go`), left
      RUNNING: the launcher updates only DAGs that record `total_dag_tasks` or `iteration_count`,
      which the root does not (`client.go: UpdateDAGExecutionsState`);
    - per task a `system.ContainerExecution` (or `system.ImporterExecution`) with `display_name`,
      `task_name`, `parent_dag_id`, and for containers `pod_name`, `pod_uid`, `namespace`,
      `image`, `inputs` (the parameter values) and `outputs` (output parameters);
    - artifacts typed by their schema title (`tfx.Model`, `collabopt.VelaModel`, …) with the
      executor output metadata as custom properties (numbers as doubles), INPUT/OUTPUT events
      whose path is the input/output key; executions and artifacts in both contexts.

    `end=(task, state)` records a run that stopped at `task`: RUNNING (its driver created the
    execution, its pod still runs, or was killed) or FAILED (the launcher publishes a failed step
    without outputs, `component/launcher_v2.go: Execute`); the tasks after it are not recorded.

    Returns {harness artifact id: MLMD artifact id}.
    """
    from ml_metadata.metadata_store import metadata_store

    store = metadata_store.MetadataStore(connection_config)
    context_type = {n: store.put_context_type(mlmd_pb.ContextType(name=n))
                    for n in ("system.Pipeline", "system.PipelineRun")}
    execution_type = {n: store.put_execution_type(mlmd_pb.ExecutionType(name=n))
                      for n in ("system.DAGExecution", "system.ContainerExecution",
                                "system.ImporterExecution")}

    def string(value: str) -> mlmd_pb.Value:
        return mlmd_pb.Value(string_value=value)

    pipeline = mlmd_pb.Context(type_id=context_type["system.Pipeline"], name=run.pipeline_name)
    existing = store.get_context_by_type_and_name("system.Pipeline", run.pipeline_name)
    pipeline.id = existing.id if existing else store.put_contexts([pipeline])[0]
    run_context = mlmd_pb.Context(type_id=context_type["system.PipelineRun"], name=run.run_id)
    for key, value in (("namespace", namespace), ("resource_name", "run-resource"),
                       ("pipeline_root", run.run_root),
                       ("store_session_info", store_session_info(run.pipeline_root))):
        run_context.custom_properties[key].CopyFrom(string(value))
    run_context.id = store.put_contexts([run_context])[0]
    store.put_parent_contexts([mlmd_pb.ParentContext(child_id=run_context.id, parent_id=pipeline.id)])
    contexts = [pipeline, run_context]

    dag = mlmd_pb.Execution(type_id=execution_type["system.DAGExecution"], name=f"run/{run.run_id}",
                            last_known_state=mlmd_pb.Execution.RUNNING)
    dag.custom_properties["display_name"].CopyFrom(string(""))
    dag.custom_properties["task_name"].CopyFrom(string(""))
    dag_id, _, _ = store.put_execution(dag, [], contexts)

    ids: dict[int, int] = {}
    type_ids: dict[str, int] = {}

    def event(kind, key: str, artifact_id: Optional[int] = None) -> mlmd_pb.Event:
        e = mlmd_pb.Event(type=kind)
        if artifact_id is not None:
            e.artifact_id = artifact_id
        e.path.steps.add().key = key
        return e

    for task in run.tasks:
        # CreateExecution (the driver, before the step runs): RUNNING, INPUT events by id.
        execution = mlmd_pb.Execution(type_id=execution_type[task.execution_type],
                                      last_known_state=mlmd_pb.Execution.RUNNING)
        props = execution.custom_properties
        props["display_name"].CopyFrom(string(task.task if task.image else ""))
        props["task_name"].CopyFrom(string(task.task))
        props["parent_dag_id"].int_value = dag_id
        if task.execution_type == "system.ContainerExecution":
            for key, value in (("pod_name", f"{run.run_id}-{task.task}".lower()), ("pod_uid", ""),
                               ("namespace", namespace), ("image", task.image or "")):
                props[key].CopyFrom(string(value))
            json_format.ParseDict(task.parameters, props["inputs"].struct_value)
        inputs = [(None, event(mlmd_pb.Event.INPUT, key, ids[artifact_id]))
                  for key, artifact_ids in task.inputs.items() for artifact_id in artifact_ids]
        execution.id, _, _ = store.put_execution(execution, inputs, contexts)
        if end is not None and end[0] == task.task:
            if end[1] != mlmd_pb.Execution.RUNNING:
                execution.last_known_state = end[1]
                store.put_execution(execution, [], contexts)
            break

        # RecordArtifact (the launcher, after the step) for container outputs; the importer's
        # artifact is created by PublishExecution itself (it has no id yet).
        outputs = []
        for key, artifact in task.outputs.items():
            title = artifact.type_name
            if title not in type_ids:
                type_ids[title] = store.put_artifact_type(mlmd_pb.ArtifactType(name=title))
            mlmd_artifact = mlmd_pb.Artifact(type_id=type_ids[title], uri=artifact.uri,
                                             state=mlmd_pb.Artifact.LIVE)
            for k, v in artifact.custom_properties.items():
                mlmd_artifact.custom_properties[k].CopyFrom(v)
            if task.execution_type == "system.ContainerExecution":
                (ids[artifact.id],) = store.put_artifacts([mlmd_artifact])
                outputs.append((None, event(mlmd_pb.Event.OUTPUT, key, ids[artifact.id])))
            else:
                outputs.append((mlmd_artifact, event(mlmd_pb.Event.OUTPUT, key)))

        # PublishExecution: COMPLETE, output parameters, OUTPUT events.
        execution.last_known_state = mlmd_pb.Execution.COMPLETE
        if task.execution_type == "system.ContainerExecution":
            json_format.ParseDict(task.output_parameters, props["outputs"].struct_value)
        _, artifact_ids, _ = store.put_execution(execution, outputs, contexts)
        for (artifact, _), mlmd_id, recorded in zip(outputs, artifact_ids, task.outputs.values()):
            if artifact is not None:
                ids[recorded.id] = mlmd_id
    return ids
