"""The lineage of an artifact as a terminal tree (`collabopt lineage`); the walk that reads it from
ML Metadata is `collabopt.pipelines.metadata.lineage`."""
from __future__ import annotations

import json
from typing import Any, Optional

from rich.text import Text
from rich.tree import Tree

from collabopt.components import types as t
from collabopt.pipelines.metadata.lineage import ArtifactNode, ExecutionNode, Lineage

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


def render_tree(lineage: Lineage) -> Tree:
    """Every execution under the artifact it produced, from the root back to the inputs."""
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


__all__ = ["format_value", "render_tree"]
