"""One reader of an ML Metadata store in a given layout: type names, contexts, a run's executions
and artifacts. Whatever the layout, the reader hands out artifact types by TFX's type names and
property values in TFX's kinds (`Layout.artifact_type_name`, `Layout.value`), so `runs`, `leaves`,
`lineage` and the report read every store the same way."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from collabopt.components.properties import property_value
from collabopt.pipelines.metadata.layout import LAYOUTS, TFX_LOCAL, Layout, TypedContext

Artifact = metadata_store_pb2.Artifact
Context = metadata_store_pb2.Context
Event = metadata_store_pb2.Event
Execution = metadata_store_pb2.Execution

OUTPUT_EVENTS = (Event.OUTPUT, Event.DECLARED_OUTPUT, Event.INTERNAL_OUTPUT)


def artifact_properties(artifact: Artifact) -> dict[str, Any]:
    props = {k: property_value(v) for k, v in artifact.properties.items()}
    props.update({k: property_value(v) for k, v in artifact.custom_properties.items()})
    return props


def detect_layout(store: metadata_store.MetadataStore) -> Layout:
    """The layout of the runs `store` holds: the one whose run contexts it has (TFX's when it has
    none). A store holding runs of both (`collabopt run` and Kubeflow writing one MySQL database)
    is read in the layout of its latest run."""
    latest = []
    for order, layout in enumerate(LAYOUTS):
        runs = store.get_contexts_by_type(layout.run_context)
        if runs:
            latest.append((max(c.create_time_since_epoch for c in runs), -order, layout))
    return max(latest, key=lambda item: item[:2])[2] if latest else TFX_LOCAL


@dataclasses.dataclass
class RunArtifacts:
    """The artifacts a pipeline run produced (or reused from the cache), by type name."""

    run_id: str
    by_type: dict[str, list[Artifact]]

    def of_type(self, type_name: str) -> list[Artifact]:
        return self.by_type.get(type_name, [])


class Reader:
    """Reads `store` as laid out by `layout`, caching type names."""

    def __init__(self, store: metadata_store.MetadataStore, layout: Layout = TFX_LOCAL):
        self.store = store
        self.layout = layout
        self._artifact_types: dict[int, str] = {}
        self._execution_types: dict[int, str] = {}
        self._context_types: dict[int, str] = {}

    # --- type names ------------------------------------------------------------------------------
    def _names(self, cache: dict[int, str], ids: Iterable[int], getter, name=lambda t: t.name):
        missing = sorted(set(ids) - set(cache))
        if missing:
            cache.update({t.id: name(t) for t in getter(missing)})
        return cache

    def artifact_type(self, artifact: Artifact) -> str:
        return self.artifact_types([artifact])[artifact.type_id]

    def artifact_types(self, artifacts: Iterable[Artifact]) -> dict[int, str]:
        return self._names(self._artifact_types, {a.type_id for a in artifacts},
                           self.store.get_artifact_types_by_id, self.layout.artifact_type_name)

    def execution_type(self, execution: Execution) -> str:
        return self._names(self._execution_types, [execution.type_id],
                           self.store.get_execution_types_by_id).get(execution.type_id, "?")

    def typed(self, contexts: Iterable[Context]) -> list[TypedContext]:
        contexts = list(contexts)
        names = self._names(self._context_types, {c.type_id for c in contexts},
                            self.store.get_context_types_by_id)
        return [TypedContext(names[c.type_id], c) for c in contexts]

    # --- artifacts -----------------------------------------------------------------------------
    def artifacts(self, ids: Iterable[int]) -> list[Artifact]:
        """The artifacts with these ids, their property values in TFX's kinds."""
        ids = sorted(set(ids))
        found = self.store.get_artifacts_by_id(ids) if ids else []
        if self.layout.value is not None:
            for artifact in found:
                for props in (artifact.properties, artifact.custom_properties):
                    for key, value in props.items():
                        decoded = self.layout.value(value)
                        if decoded is not value:
                            value.CopyFrom(decoded)
        return found

    # --- executions ----------------------------------------------------------------------------
    def steps(self, run: Context) -> list[Execution]:
        """The run's executions that ran a step (not KFP's DAG executions, which stand for the run
        or a sub-DAG and never record the run's end: see `layout.KFP_V2`)."""
        executions = self.store.get_executions_by_context(run.id)
        dag_type = self.layout.dag_execution_type
        return [e for e in executions if not dag_type or self.execution_type(e) != dag_type]

    def parameters(self, execution: Execution) -> dict[str, Any]:
        return {k: property_value(v) for k, v in self.layout.parameters(execution).items()}

    def contexts_of(self, execution: Execution) -> list[TypedContext]:
        return self.typed(self.store.get_contexts_by_execution(execution.id))

    def node_id(self, execution: Execution, contexts: Optional[list[TypedContext]] = None) -> str:
        contexts = self.contexts_of(execution) if contexts is None else contexts
        return (self.layout.node_id(execution, contexts) or execution.name
                or self.execution_type(execution))

    def run_of(self, contexts: list[TypedContext]) -> Optional[Context]:
        return next((c.context for c in contexts if c.type == self.layout.run_context), None)

    # --- runs ----------------------------------------------------------------------------------
    def runs(self) -> list[Context]:
        """Every run in the store, oldest first."""
        runs = self.store.get_contexts_by_type(self.layout.run_context)
        return sorted(runs, key=lambda c: (c.create_time_since_epoch, c.id))

    def run(self, run_id: str) -> Optional[Context]:
        return self.store.get_context_by_type_and_name(self.layout.run_context, run_id)

    def pipeline_of(self, run: Context) -> str:
        parents = self.typed(self.store.get_parent_contexts_by_context(run.id))
        return next((p.name for p in parents if p.type == self.layout.pipeline_context), "")

    def run_artifacts(self, run: Context) -> RunArtifacts:
        """Live output artifacts of every execution in the run (cached executions included)."""
        executions = self.store.get_executions_by_context(run.id)
        events = self.store.get_events_by_execution_ids([e.id for e in executions])
        ids = {e.artifact_id for e in events if e.type == Event.OUTPUT}
        ids |= {a.id for a in self.store.get_artifacts_by_context(run.id)}
        artifacts = self.artifacts(ids)
        types = self.artifact_types(artifacts)
        by_type: dict[str, list[Artifact]] = {}
        for artifact in artifacts:
            if artifact.state == Artifact.LIVE:
                by_type.setdefault(types[artifact.type_id], []).append(artifact)
        return RunArtifacts(run.name, by_type)
