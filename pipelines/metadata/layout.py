"""How an orchestrator lays out a pipeline in ML Metadata: what a reader has to know about it.

Runs, leaves and lineage are read the same way whoever wrote the store (`reader`, `runs`,
`leaves`, `lineage`); only what is described here differs. Two layouts:

`TFX_LOCAL`: TFX's local and Beam runners (and `collabopt run`) group a pipeline's executions under
three contexts: `pipeline` (every run), `pipeline_run` (one run, named by its run id, a child of the
pipeline context) and `node` (one component across runs, named `<pipeline>.<node id>`). Execution
types are the component classes, artifact types TFX's type names (`ModelEvaluation`), properties
keep their kinds (int, double, string), and an execution's parameters are its properties.

`KFP_V2`: Kubeflow Pipelines v2's driver and launcher (kubeflow/pipelines, backend/src/v2/,
read at commit 7b70c7b; the names are unchanged since KFP 2.0):
- contexts `system.Pipeline` (named by the pipeline) and `system.PipelineRun` (named by the run
  id, a child of the pipeline context): `metadata/client.go: GetPipeline`;
- one `system.DAGExecution` per DAG, the root one named `run/<run id>` (`driver/root_dag.go`); a
  step is a `system.ContainerExecution` (or `system.ImporterExecution`) with no name, its task in
  the custom property `task_name`, its parent DAG in `parent_dag_id` and its input parameters as a
  struct in `inputs` (`metadata/client.go: CreateExecution`, `driver/container.go`,
  `component/importer_launcher.go`); every execution in both contexts;
- artifact types named by the schema title (`metadata/client.go: SchemaToArtifactType`), which
  for TFX's standard types is `tfx.<TYPE_NAME>` (`tfx.ModelEvaluation`) and for custom types their
  TYPE_NAME (`collabopt.TFLiteModel`): tfx/orchestration/kubeflow/v2/compiler_utils.py
  (`TITLE_TO_CLASS_PATH`, `get_artifact_schema`);
- artifact properties are the step's executor output metadata, recorded as custom properties
  (`metadata/client.go: RecordArtifact`, `metadata/converter.go: toMLMDArtifact`): every number
  a double, a bool an int, a list or struct a struct value wrapped as {"list": …} / {"struct": …}
  (`converter.go: StructValueToMLMDValue`). TFX's step entrypoint had already written int
  properties as numbers (tfx/orchestration/kubeflow/v2/container/kubeflow_v2_entrypoint_utils.py:
  `_get_json_value_mapping`), so the store no longer knows which numbers were ints.
- the root DAG execution stays RUNNING: the launcher updates only DAGs that record
  `total_dag_tasks` or `iteration_count`, which the root does not (`metadata/client.go:
  UpdateDAGExecutionsState`; before KFP commit 5d44be1 a failed step turned it FAILED). The run's
  state is kept by KFP's API server, not in ML Metadata, and a failed step's error is in its pod's
  log only (`component/launcher_v2.go: Execute` publishes FAILED without a message).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Callable, Optional, Sequence

from google.protobuf import json_format, struct_pb2
from ml_metadata.proto import metadata_store_pb2

Context = metadata_store_pb2.Context
Execution = metadata_store_pb2.Execution
Value = metadata_store_pb2.Value


@dataclasses.dataclass(frozen=True)
class TypedContext:
    """A context with the name of its type (MLMD gives only the type id)."""

    type: str
    context: Context

    @property
    def name(self) -> str:
        return self.context.name


def _tfx_parameters(execution: Execution) -> dict[str, Value]:
    """TFX records a component's parameters as execution properties; custom properties are kept
    too, except TFX's own bookkeeping (`__execution_result__`, …)."""
    parameters = dict(execution.properties)
    parameters.update({k: v for k, v in execution.custom_properties.items()
                       if not k.startswith("__")})
    return parameters


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str
    pipeline_context: str                   # context type grouping every run of one pipeline
    run_context: str                        # context type of one run (its name is the run id)
    node_context: Optional[str]             # context type of one node across runs, if any
    # The pipeline node (component id / KFP task) that ran an execution.
    node_id: Callable[[Execution, Sequence[TypedContext]], Optional[str]]
    # The name collabopt knows an artifact type by: TFX's type name.
    artifact_type_name: Callable[[metadata_store_pb2.ArtifactType], str] = lambda t: t.name
    # A property value in the kinds TFX records (int, double, string; lists and dicts as JSON);
    # None: the store already holds them so.
    value: Optional[Callable[[Value], Value]] = None
    # An execution's parameters (names -> values in TFX's kinds).
    parameters: Callable[[Execution], dict[str, Value]] = _tfx_parameters
    # Execution type of a DAG (the run itself, or a sub-DAG) rather than a step, if any.
    dag_execution_type: Optional[str] = None
    # What a failed execution that recorded no reason is reported with.
    no_failure_reason: str = "no reason recorded"
    # Why a run with unfinished steps cannot be told running from killed.
    unowned_running: str = "no owner recorded: started outside `collabopt run`"


def _tfx_node_id(execution: Execution, contexts: Sequence[TypedContext]) -> Optional[str]:
    """TFX names node contexts `<pipeline name>.<node id>`; a pipeline name may hold dots."""
    pipelines = [c.name for c in contexts if c.type == TFX_LOCAL.pipeline_context]
    for context in contexts:
        if context.type != TFX_LOCAL.node_context:
            continue
        for pipeline in pipelines:
            if context.name.startswith(pipeline + "."):
                return context.name[len(pipeline) + 1:]
        return context.name.rsplit(".", 1)[-1]
    return None


# tfx/dsl/compiler/constants.py: PIPELINE_CONTEXT_TYPE_NAME, PIPELINE_RUN_CONTEXT_TYPE_NAME,
# NODE_CONTEXT_TYPE_NAME (not imported: importing TFX imports TensorFlow).
TFX_LOCAL = Layout(name="tfx", pipeline_context="pipeline", run_context="pipeline_run",
                   node_context="node", node_id=_tfx_node_id)


# --- KFP v2 ------------------------------------------------------------------------------------
_KFP_TASK_NAME = "task_name"              # metadata/client.go: keyTaskName
_KFP_INPUTS = "inputs"                    # metadata/client.go: keyInputs
_TFX_TITLE_PREFIX = "tfx."                # compiler_utils.py: TITLE_TO_CLASS_PATH
_EXACT_DOUBLE_INTS = 2 ** 53


def _kfp_node_id(execution: Execution, contexts: Sequence[TypedContext]) -> Optional[str]:
    value = execution.custom_properties.get(_KFP_TASK_NAME)
    return (value.string_value if value is not None else "") or None


def _kfp_type_name(artifact_type: metadata_store_pb2.ArtifactType) -> str:
    name = artifact_type.name
    return name[len(_TFX_TITLE_PREFIX):] if name.startswith(_TFX_TITLE_PREFIX) else name


def _number(number: float) -> Value:
    """A double that holds a whole number was an int before KFP and TFX's entrypoint made every
    number a double (see the module docstring): read it as one. A float property that happens to
    be whole (an accuracy of exactly 1.0) reads as the same number, as an int."""
    if number.is_integer() and abs(number) < _EXACT_DOUBLE_INTS:
        return Value(int_value=int(number))
    return Value(double_value=number)


def _from_struct_value(value: struct_pb2.Value) -> Value:
    """A protobuf struct value (a parameter, or a list / struct property) in TFX's kinds."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return _number(value.number_value)
    if kind == "string_value":
        return Value(string_value=value.string_value)
    if kind == "bool_value":
        return Value(int_value=int(value.bool_value))
    if kind == "null_value":
        return Value()
    return Value(string_value=json.dumps(json_format.MessageToDict(value), sort_keys=True))


def _kfp_value(value: Value) -> Value:
    kind = value.WhichOneof("value")
    if kind == "double_value":
        return _number(value.double_value)
    if kind == "struct_value":
        fields = value.struct_value.fields
        if len(fields) == 1 and ("list" in fields or "struct" in fields):  # converter.go's wrapping
            return _from_struct_value(next(iter(fields.values())))
        return Value(string_value=json.dumps(json_format.MessageToDict(value.struct_value),
                                             sort_keys=True))
    return value


def _kfp_parameters(execution: Execution) -> dict[str, Value]:
    """The task's input parameters, as the driver recorded them (`inputs`)."""
    inputs = execution.custom_properties.get(_KFP_INPUTS)
    if inputs is None or inputs.WhichOneof("value") != "struct_value":
        return {}
    return {k: _from_struct_value(v) for k, v in sorted(inputs.struct_value.fields.items())}


KFP_V2 = Layout(
    name="kfp", pipeline_context="system.Pipeline", run_context="system.PipelineRun",
    node_context=None, node_id=_kfp_node_id, artifact_type_name=_kfp_type_name,
    value=_kfp_value, parameters=_kfp_parameters, dag_execution_type="system.DAGExecution",
    no_failure_reason="KFP records no reason in ML Metadata: the step's log in the KFP UI has it",
    unowned_running="KFP keeps whether its pods still run outside ML Metadata: see the KFP UI")

LAYOUTS = (TFX_LOCAL, KFP_V2)
