"""Which steps and parameters produced an artifact: its lineage, read from ML Metadata alone.

The walk goes backwards through MLMD events: an artifact's OUTPUT event names the execution that
produced it, that execution's INPUT events name its input artifacts, and so on until the
executions that have no inputs (the ExampleGen, an Importer).

Things MLMD does that the walk has to handle:
- Cached executions. When a re-run reuses a step's earlier result, TFX records a new execution in
  state CACHED with OUTPUT events to the *earlier* artifacts. An artifact can so have several
  producers; the one that really computed it is the COMPLETE one (the cached ones are listed as
  `cached_by`). The walk follows the COMPLETE producer, so it reaches the base model whatever run
  the artifacts came from.
- Shared inputs. The Examples feed every step and the base model feeds several techniques: the
  lineage is a DAG. Each execution is expanded once; later mentions refer to it.
- Side inputs. A leaf's Evaluator reads the baseline leaf's evaluation to measure the accuracy
  drop, and the Selector reads every leaf's evaluation. Following those would turn the lineage of
  one leaf into the whole tree, so by default the walk lists them without expanding them: the
  baseline evaluation (`baseline_evaluation`) and, on a Selector, the evaluations of the leaves it
  did not select. `full=True` expands everything.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from collabopt.components import keys
from collabopt.components import types as t
from collabopt.components.core.errors import CollaboptError
from collabopt.components.core.leaves import leaf_key
from collabopt.pipelines.metadata.reader import (OUTPUT_EVENTS, Artifact, Event, Execution, Reader,
                                                 artifact_properties)
from collabopt.pipelines.metadata.runs import iso

# Inputs listed but not expanded unless full=True (see the module docstring).
SIDE_INPUT_KEYS = frozenset({keys.BASELINE_EVALUATION_KEY})
# Producers in order of preference: the execution that computed the artifact comes first.
_PRODUCER_PREFERENCE = {Execution.COMPLETE: 0, Execution.RUNNING: 1, Execution.NEW: 1,
                        Execution.CACHED: 2, Execution.FAILED: 3, Execution.CANCELED: 3}


class NothingSelectedError(CollaboptError):
    """The Selector of the run picked no leaf (none met the thresholds)."""


@dataclasses.dataclass
class ArtifactNode:
    id: int
    type: str
    uri: str
    state: str
    properties: dict[str, Any]
    produced_by: Optional[int]                # the execution that computed it (None: no producer)
    cached_by: list[int]                      # executions that reused it from the cache
    create_time: Optional[str]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class InputRef:
    key: str
    artifact_id: int
    followed: bool                            # False: a side input, listed but not expanded

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ExecutionNode:
    id: int
    node_id: str                              # the component id in the pipeline (tree.py)
    component: str                            # its class, e.g. collabopt.components.pruner.component.Pruner
                                              # (KFP: the execution type, system.ContainerExecution)
    state: str
    parameters: dict[str, Any]                # TFX: execution properties; KFP: task inputs
    create_time: Optional[str]
    last_update_time: Optional[str]
    duration_s: Optional[float]
    inputs: list[InputRef]
    outputs: dict[str, list[int]]
    run_id: Optional[str] = None              # the run the execution belongs to

    @property
    def component_name(self) -> str:
        return self.component.rsplit(".", 1)[-1]

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["inputs"] = [i.to_json() for i in self.inputs]
        return data


@dataclasses.dataclass
class Lineage:
    """Everything upstream of `root` (an artifact id), in the order the walk met it."""

    metadata: str                             # the store, password redacted
    root: int
    artifacts: dict[int, ArtifactNode]
    executions: dict[int, ExecutionNode]
    run: Optional[str] = None                 # the run shown (--selected), else the root's producer's

    def node_ids(self) -> list[str]:
        return [e.node_id for e in self.executions.values()]

    def artifacts_of_type(self, type_name: str) -> list[ArtifactNode]:
        return [a for a in self.artifacts.values() if a.type == type_name]

    def chain(self, artifact_id: Optional[int] = None) -> list[ArtifactNode]:
        """The artifacts of the main line from the root (or `artifact_id`) back to the base,
        following each producer's followed inputs (a Model first, else a TFLiteModel, never the
        Examples): for a leaf's `.tflite`, .tflite -> QAT model -> clustered -> pruned -> base."""
        current = self.artifacts[self.root if artifact_id is None else artifact_id]
        line = [current]
        while current.produced_by is not None:
            execution = self.executions[current.produced_by]
            candidates = [self.artifacts[i.artifact_id] for i in execution.inputs if i.followed]
            candidates = [a for a in candidates if a.type != "Examples"]
            if not candidates:
                break
            candidates.sort(key=lambda a: (a.type != "Model", a.type != t.TFLiteModel.TYPE_NAME,
                                           a.id))
            current = candidates[0]
            line.append(current)
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            "metadata": self.metadata,
            "run": self.run,
            "root": self.root,
            "node_ids": self.node_ids(),
            "artifacts": [a.to_json() for a in self.artifacts.values()],
            "executions": [e.to_json() for e in self.executions.values()],
        }


def _event_key(event: Event) -> str:
    for step in event.path.steps:
        if step.HasField("key"):
            return step.key
    return ""


class _Walker:
    def __init__(self, reader: Reader, full: bool):
        self.reader = reader
        self.store = reader.store
        self.full = full

    def artifacts(self, ids: list[int]) -> dict[int, Artifact]:
        found = {a.id: a for a in self.reader.artifacts(ids)}
        self.reader.artifact_types(found.values())
        return found

    def walk(self, root_id: int, shown_store: str) -> Lineage:
        roots = self.artifacts([root_id])
        if root_id not in roots:
            raise CollaboptError(
                f"No artifact #{root_id} in the ML Metadata store {shown_store!r}. "
                "`collabopt leaves --metadata … --json` lists the leaves' artifact ids "
                "(evaluation_id, tflite_id); `collabopt lineage --selected` starts from the "
                "selected model.")
        artifact_nodes: dict[int, ArtifactNode] = {}
        execution_nodes: dict[int, ExecutionNode] = {}
        pending = [root_id]
        protos = dict(roots)
        while pending:
            batch = [i for i in dict.fromkeys(pending) if i not in artifact_nodes]
            pending = []
            if not batch:
                break
            protos.update(self.artifacts([i for i in batch if i not in protos]))
            events = self.store.get_events_by_artifact_ids(batch)
            outputs = [e for e in events if e.type in OUTPUT_EVENTS]
            executions = {e.id: e for e in self.store.get_executions_by_id(
                sorted({e.execution_id for e in outputs}))}
            new_producers = []
            for artifact_id in batch:
                producers = sorted(
                    (executions[e.execution_id] for e in outputs
                     if e.artifact_id == artifact_id and e.execution_id in executions),
                    key=lambda x: (_PRODUCER_PREFERENCE.get(x.last_known_state, 4),
                                   x.create_time_since_epoch, x.id))
                artifact_nodes[artifact_id] = self.artifact_node(protos[artifact_id], producers)
                if producers and producers[0].id not in execution_nodes:
                    new_producers.append(producers[0])
            for producer in {p.id: p for p in new_producers}.values():
                node = self.execution_node(producer, protos)
                execution_nodes[producer.id] = node
                pending.extend(i.artifact_id for i in node.inputs if i.followed)
        side = sorted({i.artifact_id for e in execution_nodes.values() for i in e.inputs
                       if not i.followed} - set(artifact_nodes))
        if side:  # described, producer not looked up
            for artifact_id, proto in self.artifacts(side).items():
                artifact_nodes[artifact_id] = self.artifact_node(proto, [])
        root_producer = artifact_nodes[root_id].produced_by
        run = execution_nodes[root_producer].run_id if root_producer is not None else None
        return Lineage(shown_store, root_id, artifact_nodes, execution_nodes, run)

    def artifact_node(self, proto: Artifact, producers: list[Execution]) -> ArtifactNode:
        """`producers` best first: the first is the one the walk follows."""
        return ArtifactNode(
            id=proto.id,
            type=self.reader.artifact_type(proto),
            uri=proto.uri,
            state=Artifact.State.Name(proto.state),
            properties=dict(sorted(artifact_properties(proto).items())),
            produced_by=producers[0].id if producers else None,
            cached_by=[p.id for p in producers[1:] if p.last_known_state == Execution.CACHED],
            create_time=iso(proto.create_time_since_epoch),
        )

    def execution_node(self, execution: Execution, protos: dict[int, Artifact]) -> ExecutionNode:
        events = self.store.get_events_by_execution_ids([execution.id])
        outputs: dict[str, list[int]] = {}
        for e in events:
            if e.type == Event.OUTPUT:
                outputs.setdefault(_event_key(e), []).append(e.artifact_id)
        inputs = sorted((e for e in events if e.type == Event.INPUT),
                        key=lambda e: (_event_key(e), e.artifact_id))
        protos.update(self.artifacts([i for ids in outputs.values() for i in ids
                                      if i not in protos]
                                     + [e.artifact_id for e in inputs if e.artifact_id not in protos]))
        # A Selector: if one of its outputs names the selected leaf, follow only that leaf's
        # evaluation among the evaluations it judged.
        selected = next((artifact_properties(protos[i]).get(t.SELECTED_PATH)
                         for ids in outputs.values() for i in ids
                         if i in protos and artifact_properties(protos[i]).get(t.SELECTED_PATH)),
                        None)
        refs = []
        for e in inputs:
            key = _event_key(e)
            followed = True
            if not self.full:
                if key in SIDE_INPUT_KEYS:
                    followed = False
                elif (selected and key != leaf_key(selected) and e.artifact_id in protos
                      and self.reader.artifact_type(protos[e.artifact_id]) == "ModelEvaluation"):
                    followed = False
            refs.append(InputRef(key, e.artifact_id, followed))
        parameters = self.reader.parameters(execution)
        created, updated = execution.create_time_since_epoch, execution.last_update_time_since_epoch
        contexts = self.reader.contexts_of(execution)
        run = self.reader.run_of(contexts)
        return ExecutionNode(
            id=execution.id,
            node_id=self.reader.node_id(execution, contexts),
            component=self.reader.execution_type(execution),
            state=Execution.State.Name(execution.last_known_state),
            parameters=dict(sorted(parameters.items())),
            create_time=iso(created),
            last_update_time=iso(updated),
            duration_s=round((updated - created) / 1000, 3) if created and updated else None,
            inputs=refs,
            outputs=outputs,
            run_id=run.name if run is not None else None,
        )


def trace(reader: Reader, artifact_id: int, shown_store: str = "", full: bool = False) -> Lineage:
    """The lineage of one artifact: every upstream execution and artifact."""
    return _Walker(reader, full).walk(int(artifact_id), shown_store)


# --- the selected model ------------------------------------------------------------------------

def selector_models(reader: Reader, run) -> list[Artifact]:
    """The Model outputs of the run's Selector(s) (they carry `selected_path`), oldest first."""
    artifacts = reader.run_artifacts(run)
    models = [m for m in artifacts.of_type("Model") if t.SELECTED_PATH in artifact_properties(m)]
    return sorted(models, key=lambda a: (a.create_time_since_epoch, a.id))


def selected_model(reader: Reader, run, shown_store: str = "PATH") -> Artifact:
    """The Selector's Model output of `run` whose `selected_path` is set.

    Raises NothingSelectedError (with the Selector's explanation) when no leaf was selected."""
    models = selector_models(reader, run)
    chosen = [m for m in models if artifact_properties(m).get(t.SELECTED_PATH)]
    if chosen:
        return chosen[-1]
    where = shown_store or "PATH"
    if not models:
        raise NothingSelectedError(
            f"Run {run.name} has no Selector output: did the run finish? "
            f"`collabopt leaves --metadata {where}` shows what it produced.")
    props = artifact_properties(models[-1])
    explanation = props.get(t.EXPLANATION) or "no explanation recorded"
    closest = props.get(t.CLOSEST_PATH)
    hint = (f" Trace a leaf with `collabopt lineage --metadata {where} ARTIFACT_ID` "
            "(ids from `collabopt leaves --json`)")
    raise NothingSelectedError(
        f"No leaf was selected in run {run.name}: {explanation} "
        f"`collabopt leaves --metadata {where}` shows why each leaf missed the thresholds."
        + hint + (f", e.g. the closest leaf {closest!r}." if closest else "."))


__all__ = ["Lineage", "ArtifactNode", "ExecutionNode", "InputRef", "NothingSelectedError",
           "trace", "selected_model", "selector_models"]
