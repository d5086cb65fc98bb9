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
  baseline evaluation (`baseline_evaluation`) and, on the Selector, the evaluations of the leaves it
  did not select. `full=True` expands everything.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any, Iterable, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from rich.text import Text
from rich.tree import Tree

from collabopt.components import keys
from collabopt.components import types as t
from collabopt.components.core.errors import CollaboptError
from collabopt.components.core.leaves import leaf_key
from collabopt.components.properties import property_value
from collabopt.pipelines import mlmd
from collabopt.pipelines.leaves import artifact_properties, latest_run, run_artifacts

Event = metadata_store_pb2.Event
Execution = metadata_store_pb2.Execution

NODE_CONTEXT = "node"
PIPELINE_CONTEXT = "pipeline"
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
    state: str
    parameters: dict[str, Any]                # execution properties
    create_time: Optional[str]
    last_update_time: Optional[str]
    duration_s: Optional[float]
    inputs: list[InputRef]
    outputs: dict[str, list[int]]

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

    metadata: str
    root: int
    artifacts: dict[int, ArtifactNode]
    executions: dict[int, ExecutionNode]

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
            "root": self.root,
            "node_ids": self.node_ids(),
            "artifacts": [a.to_json() for a in self.artifacts.values()],
            "executions": [e.to_json() for e in self.executions.values()],
        }

    def tree(self) -> Tree:
        return _render(self)


# --- the walk ----------------------------------------------------------------------------------

def _iso(ms: int) -> Optional[str]:
    if not ms:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc).isoformat(
        timespec="seconds")


def _event_key(event: metadata_store_pb2.Event) -> str:
    for step in event.path.steps:
        if step.HasField("key"):
            return step.key
    return ""


class _Walker:
    def __init__(self, store: metadata_store.MetadataStore, full: bool):
        self.store = store
        self.full = full
        self._artifact_types: dict[int, str] = {}
        self._execution_types: dict[int, str] = {}
        self._context_types: dict[int, str] = {}

    def _type_names(self, cache: dict[int, str], ids: Iterable[int], getter) -> dict[int, str]:
        missing = sorted(set(ids) - set(cache))
        if missing:
            cache.update({at.id: at.name for at in getter(missing)})
        return cache

    def artifacts(self, ids: list[int]) -> dict[int, metadata_store_pb2.Artifact]:
        found = {a.id: a for a in self.store.get_artifacts_by_id(ids)}
        self._type_names(self._artifact_types, {a.type_id for a in found.values()},
                         self.store.get_artifact_types_by_id)
        return found

    def node_id(self, execution: metadata_store_pb2.Execution) -> str:
        contexts = self.store.get_contexts_by_execution(execution.id)
        names = self._type_names(self._context_types, {c.type_id for c in contexts},
                                 self.store.get_context_types_by_id)
        pipelines = [c.name for c in contexts if names[c.type_id] == PIPELINE_CONTEXT]
        for context in contexts:
            if names[context.type_id] != NODE_CONTEXT:
                continue
            # TFX names node contexts "<pipeline_name>.<node_id>" (a pipeline name may hold dots).
            for pipeline in pipelines:
                if context.name.startswith(pipeline + "."):
                    return context.name[len(pipeline) + 1:]
            return context.name.rsplit(".", 1)[-1]
        return execution.name or self._execution_types.get(execution.type_id, "?")

    def walk(self, root_id: int, metadata_uri: str) -> Lineage:
        roots = self.artifacts([root_id])
        if root_id not in roots:
            raise CollaboptError(
                f"No artifact #{root_id} in the ML Metadata store {metadata_uri!r}. "
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
            outputs = [e for e in events if e.type in (Event.OUTPUT, Event.DECLARED_OUTPUT,
                                                      Event.INTERNAL_OUTPUT)]
            executions = {e.id: e for e in self.store.get_executions_by_id(
                sorted({e.execution_id for e in outputs}))}
            self._type_names(self._execution_types, {e.type_id for e in executions.values()},
                             self.store.get_execution_types_by_id)
            new_producers = []
            for artifact_id in batch:
                proto = protos[artifact_id]
                producers = sorted(
                    (executions[e.execution_id] for e in outputs
                     if e.artifact_id == artifact_id and e.execution_id in executions),
                    key=lambda x: (_PRODUCER_PREFERENCE.get(x.last_known_state, 4),
                                   x.create_time_since_epoch, x.id))
                producer = producers[0] if producers else None
                artifact_nodes[artifact_id] = self.artifact_node(proto, producers)
                if producer is not None and producer.id not in execution_nodes:
                    new_producers.append(producer)
            for producer in {p.id: p for p in new_producers}.values():
                node = self.execution_node(producer, protos)
                execution_nodes[producer.id] = node
                pending.extend(i.artifact_id for i in node.inputs if i.followed)
        side = sorted({i.artifact_id for e in execution_nodes.values() for i in e.inputs
                       if not i.followed} - set(artifact_nodes))
        if side:  # described, producer not looked up
            for artifact_id, proto in self.artifacts(side).items():
                artifact_nodes[artifact_id] = self.artifact_node(proto, [])
        return Lineage(metadata_uri, root_id, artifact_nodes, execution_nodes)

    def artifact_node(self, proto: metadata_store_pb2.Artifact,
                      producers: list[metadata_store_pb2.Execution]) -> ArtifactNode:
        """`producers` best first: the first is the one the walk follows."""
        return ArtifactNode(
            id=proto.id,
            type=self._artifact_types.get(proto.type_id, "?"),
            uri=proto.uri,
            state=metadata_store_pb2.Artifact.State.Name(proto.state),
            properties=dict(sorted(artifact_properties(proto).items())),
            produced_by=producers[0].id if producers else None,
            cached_by=[p.id for p in producers[1:] if p.last_known_state == Execution.CACHED],
            create_time=_iso(proto.create_time_since_epoch),
        )

    def execution_node(self, execution: metadata_store_pb2.Execution,
                       protos: dict[int, metadata_store_pb2.Artifact]) -> ExecutionNode:
        events = self.store.get_events_by_execution_ids([execution.id])
        outputs: dict[str, list[int]] = {}
        for e in events:
            if e.type == Event.OUTPUT:
                outputs.setdefault(_event_key(e), []).append(e.artifact_id)
        # The Selector: if one of its outputs names the selected leaf, follow only that leaf.
        out_ids = [i for ids in outputs.values() for i in ids]
        protos.update(self.artifacts([i for i in out_ids if i not in protos]))
        selected = next((artifact_properties(protos[i]).get(t.SELECTED_PATH) for i in out_ids
                         if i in protos and artifact_properties(protos[i]).get(t.SELECTED_PATH)),
                        None)
        inputs = []
        for e in sorted((e for e in events if e.type == Event.INPUT),
                        key=lambda e: (_event_key(e), e.artifact_id)):
            key = _event_key(e)
            followed = True
            if not self.full:
                if key in SIDE_INPUT_KEYS:
                    followed = False
                elif selected and key != leaf_key(selected):  # a Selector: every input is a leaf
                    followed = False
            inputs.append(InputRef(key, e.artifact_id, followed))
        parameters = {k: property_value(v) for k, v in execution.properties.items()}
        parameters.update({k: property_value(v) for k, v in execution.custom_properties.items()
                           if not k.startswith("__")})
        created, updated = execution.create_time_since_epoch, execution.last_update_time_since_epoch
        return ExecutionNode(
            id=execution.id,
            node_id=self.node_id(execution),
            component=self._execution_types.get(execution.type_id, "?"),
            state=Execution.State.Name(execution.last_known_state),
            parameters=dict(sorted(parameters.items())),
            create_time=_iso(created),
            last_update_time=_iso(updated),
            duration_s=round((updated - created) / 1000, 3) if created and updated else None,
            inputs=inputs,
            outputs=outputs,
        )


def trace(store: metadata_store.MetadataStore, artifact_id: int, metadata_uri: str = "",
          full: bool = False) -> Lineage:
    """The lineage of one artifact: every upstream execution and artifact."""
    return _Walker(store, full).walk(int(artifact_id), metadata_uri)


# --- the selected model ------------------------------------------------------------------------

def selector_models(store: metadata_store.MetadataStore,
                    run_id: Optional[str] = None) -> list[metadata_store_pb2.Artifact]:
    """The Model outputs of the run's Selector(s) (they carry `selected_path`), oldest first."""
    run = run_artifacts(store, latest_run(store, run_id))
    models = [m for m in run.of_type("Model") if t.SELECTED_PATH in artifact_properties(m)]
    return sorted(models, key=lambda a: (a.create_time_since_epoch, a.id))


def selected_model(store: metadata_store.MetadataStore, metadata_uri: str = "",
                   run_id: Optional[str] = None) -> metadata_store_pb2.Artifact:
    """The Selector's Model output of the latest run whose `selected_path` is set.

    Raises NothingSelectedError (with the Selector's explanation) when no leaf was selected."""
    models = selector_models(store, run_id)
    chosen = [m for m in models if artifact_properties(m).get(t.SELECTED_PATH)]
    if chosen:
        return chosen[-1]
    where = metadata_uri or "PATH"
    if not models:
        raise NothingSelectedError(
            "The latest pipeline run has no Selector output: did the run finish? "
            f"`collabopt leaves --metadata {where}` shows what it produced.")
    props = artifact_properties(models[-1])
    explanation = props.get(t.EXPLANATION) or "no explanation recorded"
    closest = props.get(t.CLOSEST_PATH)
    hint = (f" Trace a leaf with `collabopt lineage --metadata {where} ARTIFACT_ID` "
            "(ids from `collabopt leaves --json`)")
    raise NothingSelectedError(
        f"No leaf was selected in the latest run: {explanation} "
        f"`collabopt leaves --metadata {where}` shows why each leaf missed the thresholds."
        + hint + (f", e.g. the closest leaf {closest!r}." if closest else "."))


def read_lineage(metadata_uri: str, artifact_id: Optional[int] = None, selected: bool = False,
                 run_id: Optional[str] = None, full: bool = False) -> Lineage:
    """The lineage of `artifact_id`, or (selected=True) of the latest run's selected model."""
    if (artifact_id is None) == (not selected):
        raise CollaboptError("Give exactly one of an ARTIFACT_ID or --selected.")
    store = mlmd.open_store(metadata_uri)
    if selected:
        artifact_id = selected_model(store, metadata_uri, run_id).id
    return trace(store, artifact_id, metadata_uri, full=full)


# --- the terminal tree -------------------------------------------------------------------------

_STATE_STYLE = {"COMPLETE": "green", "CACHED": "cyan", "FAILED": "red", "CANCELED": "yellow",
                "RUNNING": "yellow", "NEW": "yellow"}
# Left out of the terminal tree (not of the JSON): TFX bookkeeping, and the step's parameters that
# our components copy onto their outputs (the producing execution shows them right below).
_HIDDEN_IN_TREE = {"tfx_version", "is_external", t.PARAMETERS}


def format_value(value: Any) -> str:
    """A value on one line: floats to 4 significant digits, JSON compacted, long text cut."""
    if isinstance(value, float):
        return format(value, ".4g")
    text = str(value)
    if text[:1] in "{[":
        try:  # JSON parameters (e.g. an ExampleGen's input_config) on one line
            text = json.dumps(json.loads(text), separators=(",", ":"))
        except ValueError:
            pass
    return text if len(text) <= 160 else text[:157] + "…"


def _fmt_props(props: dict[str, Any]) -> str:
    return "  ".join(f"{k}={format_value(v)}" for k, v in props.items() if k not in _HIDDEN_IN_TREE)


def _artifact_label(a: ArtifactNode, key: Optional[str] = None, note: str = "",
                    compact: bool = False) -> Text:
    text = Text()
    if key:
        text.append(f"{key}: ", style="dim")
    text.append(a.type, style="bold magenta")
    text.append(f" #{a.id}", style="bold")
    if a.properties.get(t.TECHNIQUE_PATH):
        text.append(f"  {a.properties[t.TECHNIQUE_PATH]}", style="bold yellow")
    if note:
        text.append(f"  ({note})", style="italic dim")
    if compact:
        return text
    text.append(f"\n{a.uri}", style="dim")
    props = _fmt_props(a.properties)
    if props:
        text.append(f"\n{props}", style="")
    return text


def _execution_label(e: ExecutionNode, note: str = "") -> Text:
    text = Text("⟵ ", style="dim")
    text.append(e.node_id, style="bold blue")
    text.append(f" ({e.component_name}) execution #{e.id} ")
    text.append(e.state, style=_STATE_STYLE.get(e.state, ""))
    if e.create_time:
        text.append(f"  {e.create_time}", style="dim")
    if e.duration_s is not None:
        text.append(f"  {e.duration_s:.1f} s", style="dim")
    if note:
        text.append(f"  ({note})", style="italic dim")
    if e.parameters:
        text.append("\nparameters: ", style="dim")
        text.append(_fmt_props(e.parameters))
    return text


def _render(lineage: Lineage) -> Tree:
    root = lineage.artifacts[lineage.root]
    tree = Tree(_artifact_label(root), guide_style="dim")
    shown: set[int] = {root.id}
    expanded: set[int] = set()

    def label(artifact: ArtifactNode, key: str, note: str = "") -> Text:
        if artifact.id in shown:
            text = Text(f"{key}: ", style="dim")
            text.append(artifact.type, style="magenta")
            text.append(f" #{artifact.id} (shown above)", style="dim")
            return text
        shown.add(artifact.id)
        return _artifact_label(artifact, key, note)

    def add_producer(branch: Tree, artifact: ArtifactNode) -> None:
        if artifact.produced_by is None:
            return
        execution = lineage.executions[artifact.produced_by]
        if artifact.cached_by:
            branch.add(Text(f"reused from the cache by execution(s) "
                            f"{', '.join('#' + str(i) for i in artifact.cached_by)}",
                            style="italic cyan"))
        if execution.id in expanded:
            return
        expanded.add(execution.id)
        node = branch.add(_execution_label(execution))
        side = [ref for ref in execution.inputs if not ref.followed]
        if side:
            text = Text("side inputs, not expanded (--full expands them):", style="italic dim")
            for ref in side:
                text.append("\n")
                text.append_text(_artifact_label(lineage.artifacts[ref.artifact_id], ref.key,
                                                 compact=True))
            node.add(text)
        for ref in execution.inputs:
            if ref.followed:
                child = lineage.artifacts[ref.artifact_id]
                add_producer(node.add(label(child, ref.key)), child)

    add_producer(tree, root)
    return tree


__all__ = ["format_value", "Lineage", "ArtifactNode", "ExecutionNode", "InputRef",
           "NothingSelectedError",
           "trace", "read_lineage", "selected_model", "selector_models"]
