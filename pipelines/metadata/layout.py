"""How an orchestrator lays out a pipeline in ML Metadata: the names a reader has to know.

Runs, leaves and lineage are read the same way whoever wrote the store; only these names differ.
TFX's local and Beam runners (`TFX_LOCAL`) group a pipeline's executions under three contexts:
`pipeline` (every run), `pipeline_run` (one run, named by its run id, a child of the pipeline
context) and `node` (one component across runs, named `<pipeline>.<node id>`). A second layout
(e.g. KFP v2's launcher: `system.Pipeline` / `system.PipelineRun` contexts, the node id in an
execution's `task_name`, artifact types by schema title) is another `Layout` instance.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

from ml_metadata.proto import metadata_store_pb2

Context = metadata_store_pb2.Context
Execution = metadata_store_pb2.Execution


@dataclasses.dataclass(frozen=True)
class TypedContext:
    """A context with the name of its type (MLMD gives only the type id)."""

    type: str
    context: Context

    @property
    def name(self) -> str:
        return self.context.name


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str
    pipeline_context: str                   # context type grouping every run of one pipeline
    run_context: str                        # context type of one run (its name is the run id)
    node_context: Optional[str]             # context type of one node across runs, if any
    # The pipeline node (component id) that ran an execution, from the execution and its contexts.
    node_id: Callable[[Execution, Sequence[TypedContext]], Optional[str]]
    # The name collabopt knows an artifact type by (its MLMD type name, or e.g. a schema title).
    artifact_type_name: Callable[[metadata_store_pb2.ArtifactType], str] = lambda t: t.name


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
