"""A self-contained HTML report of a pipeline run, read from ML Metadata alone.

`build_report(metadata, out_dir)` writes `out_dir/index.html` (Jinja2, template in
pipelines/templates/) and the PNG figures it shows next to it, referenced by relative path, so the
page works when opened from disk or copied elsewhere as a directory (`out` may also be a path
ending in `.html`: the figures then go next to that file):

- the leaves table (collabopt.pipelines.leaves);
- int8 accuracy against Vela inference time and against size, with the Pareto front and the
  selected leaf marked;
- the deployment tree with each node's metrics;
- the densities of one kernel along the path of the selected leaf (float base -> pruned ->
  clustered -> QAT -> int8), loaded from the Model artifacts of its lineage and its `.tflite`.

When no leaf was selected the page follows the leaf the Selector named as the closest miss (or the
most accurate leaf) and says so.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any, Optional

from collabopt.components import types as t
from collabopt.components.core.errors import CollaboptError
from collabopt.components.core.leaves import sort_key as leaf_sort_key, template_of
from collabopt.pipelines.lineage import format_value
from collabopt.pipelines.metadata.leaves import LeafRecord, leaves_of_run, selections_of_run
from collabopt.pipelines.metadata.lineage import Lineage, selected_model, trace
from collabopt.pipelines.metadata.read import open_reader
from collabopt.pipelines.metadata.reader import artifact_properties
from collabopt.pipelines.metadata.runs import choose_run
from collabopt.pipelines.metadata.store import redact

TEMPLATE = "report.html.j2"
TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
INDEX = "index.html"
PARETO_PNG = "pareto.png"
TREE_PNG = "tree.png"
WEIGHTS_PNG = "weights.png"
SEARCH_PNG = "search.png"

_SELECTED_COLOR = "#d4a017"
_BLESSED_COLOR = "#2e7d32"
_MISS_COLOR = "#c62828"
_NODE_COLOR = "#e3edf7"


@dataclasses.dataclass
class SelectionInfo:
    selected_path: str = ""
    explanation: str = ""
    closest_path: str = ""
    objective: str = ""
    ranking: tuple[str, ...] = ()
    search_trace: Optional[dict] = None      # `mode: search`: the levels tried and why it stopped


def _selection(run) -> SelectionInfo:
    """The Selector's verdict, from its Model output (one with a selected path, else the last)."""
    models = sorted((m for m in run.of_type("Model") if t.SELECTED_PATH in artifact_properties(m)),
                    key=lambda a: (bool(artifact_properties(a).get(t.SELECTED_PATH)),
                                   a.create_time_since_epoch, a.id))
    if not models:
        return SelectionInfo()
    props = artifact_properties(models[-1])
    ranking = props.get(t.RANKING)
    trace = props.get(t.SEARCH_TRACE)
    return SelectionInfo(props.get(t.SELECTED_PATH) or "", props.get(t.EXPLANATION) or "",
                         props.get(t.CLOSEST_PATH) or "", props.get(t.OBJECTIVE) or "",
                         tuple(json.loads(ranking)) if ranking else (),
                         json.loads(trace) if trace else None)


def focus_leaf(records: list[LeafRecord], selection: SelectionInfo) -> tuple[LeafRecord, str]:
    """The leaf the page follows, and a note when it is not a selected one."""
    by_path = {r.path: r for r in records}
    if selection.selected_path in by_path:
        return by_path[selection.selected_path], ""
    closest = selection.closest_path
    if closest in by_path:
        return by_path[closest], (f"No leaf was selected: the plots and the lineage follow "
                                  f"{closest}, the leaf that came closest to the thresholds.")
    best = min(records, key=lambda r: (-(r.int8_accuracy if r.int8_accuracy is not None else -1.0),
                                       leaf_sort_key(r.path)))
    return best, (f"No leaf was selected: the plots and the lineage follow {best.path}, the leaf "
                  "with the best int8 accuracy.")


def build_report(metadata_uri: str, out: str, run_id: Optional[str] = None,
                 store=None) -> str:
    """Writes the page and its figures; returns the page's path.

    `out` is a directory (the page is `out/index.html`) or a path ending in `.html` (the figures go
    next to it). `store`: the store already opened read-only (default: open `metadata_uri`)."""
    import matplotlib
    matplotlib.use("Agg")

    if out.lower().endswith((".html", ".htm")):
        out_dir, index = os.path.dirname(out) or ".", out
    else:
        out_dir, index = out, os.path.join(out, INDEX)

    reader = open_reader(metadata_uri, store)
    store, shown = reader.store, redact(metadata_uri)
    choice = choose_run(reader, run_id, where=shown)
    run_context = reader.run(choice.shown.run_id)
    run = reader.run_artifacts(run_context)
    records = leaves_of_run(run)
    if not records:
        raise CollaboptError(
            f"Run {run_context.name} has no evaluated leaf yet: did the pipeline finish? "
            f"`collabopt runs --metadata {shown}` shows what happened to it.")
    selection = _selection(run)
    focus, focus_note = focus_leaf(records, selection)
    # The page shows the lineage of the selected model (Selector included), else of the focus
    # leaf's evaluation; both reach the leaf's .tflite and, through it, every model of its path.
    start = focus.evaluation_id
    if selection.selected_path and focus.path == selection.selected_path:
        start = selected_model(reader, run_context, shown).id
    lineage = trace(reader, start, shown)
    os.makedirs(out_dir, exist_ok=True)

    figures: dict[str, Optional[str]] = {}
    pareto_caption = plot_pareto(records, focus, os.path.join(out_dir, PARETO_PNG))
    figures["pareto"] = PARETO_PNG
    plot_tree(records, _technique_models(run), focus, selection,
              os.path.join(out_dir, TREE_PNG))
    figures["tree"] = TREE_PNG
    weights = weight_densities(store, lineage, focus, os.path.join(out_dir, WEIGHTS_PNG))
    figures["weights"] = WEIGHTS_PNG if weights.get("stages") else None
    figures["search"] = None
    if selection.search_trace:
        plot_search(selection.search_trace, os.path.join(out_dir, SEARCH_PNG))
        figures["search"] = SEARCH_PNG

    primary_target = next((r.vela[0].get("name") or r.vela[0].get(t.TARGET)
                           for r in records if r.vela), None)
    per_target = [s for s in selections_of_run(run) if s.target is not None]
    page = _render(
        pipeline_name=reader.pipeline_of(run_context),
        run_id=run_context.name, run_state=choice.shown.state, run_started=choice.shown.started,
        run_note=choice.note or "", metadata=shown,
        generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        selection=selection, focus_note=focus_note, focus_path=focus.path,
        leaves=[_leaf_row(r, focus) for r in records], figures=figures,
        pareto_caption=pareto_caption, primary_target=primary_target, weights=weights,
        per_target=per_target if len(per_target) > 1 else [],
        lineage_start=_artifact_name(lineage.artifacts[lineage.root]),
        executions=_execution_rows(lineage))
    with open(index, "w", encoding="utf-8") as f:
        f.write(page)
    return index


def _render(**context: Any) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined)
    return env.get_template(TEMPLATE).render(**context)


# --- table rows --------------------------------------------------------------------------------

def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _leaf_row(r: LeafRecord, focus: LeafRecord) -> dict[str, Any]:
    def off_chip(v: dict[str, Any]) -> str:
        value, kind = _off_chip(v)
        return _fmt(value, ",") + (" (DRAM)" if kind == "DRAM" else "")

    targets = [{
        "target": v.get("name") or v.get(t.TARGET) or "–",
        "ms": _fmt(v.get(t.INFERENCE_MS), ".4f"),
        "sram": _fmt(v.get(t.SRAM_BYTES), ","), "flash": off_chip(v),
        "ops": f"{_fmt(v.get(t.NPU_OPS), 'd')}/{_fmt(v.get(t.CPU_OPS), 'd')}",
        # a run judged per target: this target's own verdict (None: not judged per target)
        "judged": v.get("selected") is not None, "selected": bool(v.get("selected")),
        "blessed": bool(v.get("blessed")), "reasons": list(v.get("reasons") or []),
    } for v in r.vela] or [{"target": "–", "ms": "–", "sram": "–", "flash": "–", "ops": "–",
                            "judged": False}]
    if r.arena_bytes is not None:
        arena = _fmt(r.arena_bytes, ",")
    else:
        arena = ("no TFLM: " + ", ".join(r.tflm_unsupported_ops)
                 if r.tflm_unsupported_ops else "–")
    return {
        "path": r.path, "int8_accuracy": _fmt(r.int8_accuracy, ".4f"),
        "accuracy_drop": _fmt(r.accuracy_drop, "+.4f"), "tflite_bytes": _fmt(r.tflite_bytes, ","),
        "gzip_bytes": _fmt(r.gzip_bytes, ","), "arena_bytes": arena,
        "sparsity": _fmt(r.sparsity, ".2f"),
        "max_unique_per_kernel": _fmt(r.max_unique_per_kernel, "d"),
        "max_unique_per_channel": _fmt(getattr(r, "max_unique_per_channel", None), "d"),
        "targets": targets,
        "selected": r.selected, "blessed": r.blessed, "reasons": r.reasons,
        "failed": r.failure is not None, "focus": r.path == focus.path,
    }


def _artifact_name(a) -> str:
    path = a.properties.get(t.TECHNIQUE_PATH)
    return f"{a.type} #{a.id}" + (f" ({path})" if path else "")


def _execution_rows(lineage: Lineage) -> list[dict[str, Any]]:
    """The executions in the order they ran (ExampleGen first)."""
    rows = []
    for e in sorted(lineage.executions.values(), key=lambda e: (e.create_time or "", e.id)):
        outputs = ", ".join(_artifact_name(lineage.artifacts[i]) for ids in e.outputs.values()
                            for i in ids if i in lineage.artifacts)
        params = "  ".join(f"{k}={format_value(v)}" for k, v in e.parameters.items())
        started = (e.create_time or "").replace("+00:00", "").replace("T", " ")
        rows.append({"node_id": e.node_id, "component": e.component, "id": e.id,
                     "state": e.state, "started": started,
                     "duration": _fmt(e.duration_s, ".1f"), "outputs": outputs,
                     "parameters": params})
    return rows


# --- Pareto ------------------------------------------------------------------------------------

def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower x (cost) and higher y (accuracy)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y)
                        for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def _off_chip(vela: dict[str, Any]) -> tuple[Optional[int], str]:
    """Vela's off-chip bytes: flash (Shared_Sram memory modes) or DRAM (Dedicated_Sram)."""
    flash, dram = vela.get(t.FLASH_BYTES), vela.get(t.DRAM_BYTES)
    if dram and not flash:
        return dram, "DRAM"
    return flash, "flash"


def _size(r: LeafRecord) -> tuple[Optional[float], str]:
    """The size a leaf is judged by: Vela's off-chip bytes on the first target, else .tflite."""
    off_chip, _ = _off_chip(r.vela[0]) if r.vela else (None, "")
    if off_chip is not None:
        return float(off_chip), "Vela flash / DRAM bytes"
    return (float(r.tflite_bytes) if r.tflite_bytes is not None else None), ".tflite bytes"


def plot_pareto(records: list[LeafRecord], focus: LeafRecord, path: str) -> str:
    """Two panels, int8 accuracy against Vela latency and against size; returns a caption note."""
    from matplotlib import pyplot as plt

    with_acc = [r for r in records if r.int8_accuracy is not None]
    size_label = _size(with_acc[0])[1] if with_acc else "size"
    panels = [
        ("Vela inference time (ms)", lambda r: r.vela[0].get(t.INFERENCE_MS) if r.vela else None),
        (f"size: {size_label}", lambda r: _size(r)[0]),
    ]
    target = next((r.vela[0].get(t.TARGET) for r in records if r.vela), None)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    missing = []
    for ax, (xlabel, xof) in zip(axes, panels):
        rows = [(r, xof(r)) for r in with_acc]
        missing += [r.path for r, x in rows if x is None]
        rows = [(r, float(x)) for r, x in rows if x is not None]
        if not rows:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel(xlabel)
            continue
        points = [(x, r.int8_accuracy) for r, x in rows]
        front = pareto_front(points)
        fx, fy = zip(*[points[i] for i in front])
        ax.step(fx, fy, where="post", color="#1565c0", lw=1.6, alpha=0.8, label="Pareto front",
                zorder=1)
        for (r, x), (_, y) in zip(rows, points):
            color = _BLESSED_COLOR if r.blessed else _MISS_COLOR
            ax.scatter([x], [y], s=60, color=color, edgecolor="black", lw=0.5, zorder=3)
            if r.selected:
                ax.scatter([x], [y], s=420, marker="*", color=_SELECTED_COLOR, edgecolor="black",
                           lw=0.8, zorder=4, label="selected")
            elif r.path == focus.path:
                ax.scatter([x], [y], s=260, facecolor="none", edgecolor=_SELECTED_COLOR, lw=2.2,
                           zorder=4, label="followed (closest)")
        ax.scatter([], [], color=_BLESSED_COLOR, edgecolor="black", label="meets thresholds")
        ax.scatter([], [], color=_MISS_COLOR, edgecolor="black", label="misses a threshold")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("int8 accuracy")
        ax.grid(alpha=0.3)
        _pad(ax, [p[0] for p in points], [p[1] for p in points])
        _label_points(ax, [r.path for r, _ in rows], points)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_title(f"accuracy vs latency{f' on {target}' if target else ''}")
    axes[1].set_title("accuracy vs size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return (f"Not plotted where the figure was not measured: {', '.join(sorted(set(missing)))}."
            if missing else "")


def plot_search(trace: dict, path: str) -> None:
    """The levels `mode: search` tried: sparsity across, cluster count down; green held the
    accuracy budget, red did not. Single-technique trials sit in the margins."""
    from matplotlib import pyplot as plt

    trials = trace.get("trials", [])
    sparsities = sorted({tr["levels"]["target_sparsity"] for tr in trials
                         if "target_sparsity" in tr["levels"]})
    clusters = sorted({tr["levels"]["number_of_clusters"] for tr in trials
                       if "number_of_clusters" in tr["levels"]}, reverse=True)
    xs = {s: i + 1 for i, s in enumerate(sparsities)}
    ys = {c: i + 1 for i, c in enumerate(clusters)}
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for tr in trials:
        levels = tr["levels"]
        if not levels:
            continue
        x = xs.get(levels.get("target_sparsity"), 0)
        y = ys.get(levels.get("number_of_clusters"), 0)
        color = _BLESSED_COLOR if tr["held"] else _MISS_COLOR
        ax.scatter([x], [y], s=220, color=color, edgecolor="black", lw=0.6, zorder=3)
        ax.annotate(str(tr["round"]), (x, y), ha="center", va="center", fontsize=8,
                    color="white", zorder=4)
    ax.scatter([], [], color=_BLESSED_COLOR, edgecolor="black", label="held the accuracy budget")
    ax.scatter([], [], color=_MISS_COLOR, edgecolor="black", label="failed it")
    ax.set_xticks([0, *xs.values()], ["no pruning", *[f"{s:g}" for s in sparsities]])
    ax.set_yticks([0, *ys.values()], ["no clustering", *[str(c) for c in clusters]])
    ax.set_xlabel("target sparsity (more compressed →)")
    ax.set_ylabel("clusters per kernel (more compressed ↑)")
    ax.set_xlim(-0.6, len(xs) + 0.6)
    ax.set_ylim(-0.6, len(ys) + 0.6)
    ax.grid(alpha=0.3)
    ax.set_title(f"Levels tried: {trace.get('leaves_tried')} of {trace.get('grid_leaves')} leaves "
                 f"in {trace.get('rounds')} rounds (numbers: round)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label_points(ax, labels: list[str], points: list[tuple[float, float]]) -> None:
    """Labels next to the points, moved around a point when they would overlap a placed one."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed = []
    candidates = [((7, 5), "left", "bottom"), ((7, -5), "left", "top"),
                  ((-7, 5), "right", "bottom"), ((-7, -5), "right", "top"),
                  ((0, 10), "center", "bottom"), ((0, -10), "center", "top")]
    for label, (x, y) in sorted(zip(labels, points), key=lambda lp: (lp[1][0], -lp[1][1])):
        for i, (offset, ha, va) in enumerate(candidates):
            text = ax.annotate(label, (x, y), textcoords="offset points", xytext=offset,
                               ha=ha, va=va, fontsize=8.5)
            box = text.get_window_extent(renderer).expanded(1.05, 1.15)
            if not any(box.overlaps(other) for other in placed) or i == len(candidates) - 1:
                placed.append(box)
                break
            text.remove()


def _pad(ax, xs, ys) -> None:
    """Room around the points for their labels (and a visible range when all are equal)."""
    xlo, xhi, ylo, yhi = min(xs), max(xs), min(ys), max(ys)
    dx = (xhi - xlo) or abs(xhi) * 0.05 or 1.0
    dy = (yhi - ylo) or 0.02
    ax.set_xlim(xlo - 0.12 * dx, xhi + 0.35 * dx)
    ax.set_ylim(ylo - 0.25 * dy, yhi + 0.2 * dy)


# --- the deployment tree -----------------------------------------------------------------------

def _technique_models(run) -> dict[str, dict[str, Any]]:
    """Properties of the run's technique Model artifacts by technique path ('base' for the input
    model); the Selector's Model output is left out."""
    models: dict[str, dict[str, Any]] = {}
    for model in sorted(run.of_type("Model"), key=lambda a: a.id):
        props = artifact_properties(model)
        if t.SELECTED_PATH in props:
            continue
        models[props.get(t.TECHNIQUE_PATH) or "base"] = {**props, "_id": model.id}
    return models


@dataclasses.dataclass
class _Node:
    key: str
    label: str
    lines: list[str]
    kind: str                     # base | technique | leaf
    parent: Optional[str]
    record: Optional[LeafRecord] = None
    children: list[str] = dataclasses.field(default_factory=list)
    x: float = 0.0
    y: float = 0.0


def tree_nodes(records: list[LeafRecord], models: dict[str, dict[str, Any]]) -> dict[str, _Node]:
    """base -> technique steps (Keras models) -> int8 leaves, keyed by technique path."""

    def model_lines(props: dict[str, Any]) -> list[str]:
        lines = []
        if props.get(t.KERAS_ACCURACY) is not None:
            lines.append(f"float acc {props[t.KERAS_ACCURACY]:.3f}")
        if props.get(t.SPARSITY) is not None:
            lines.append(f"sparsity {props[t.SPARSITY]:.2f}")
        if props.get(t.MAX_UNIQUE_PER_KERNEL) is not None:
            lines.append(f"≤{props[t.MAX_UNIQUE_PER_KERNEL]} values/kernel")
        return lines

    nodes: dict[str, _Node] = {"base": _Node("base", "base model", model_lines(
        models.get("base", {})) or ["float"], "base", None)}
    for r in records:
        steps = r.path.split(">")
        parent = "base"
        for i, step in enumerate(steps[:-1] if steps[-1] == "ptq" else steps):
            key = ">".join(steps[:i + 1])
            if key not in nodes:
                nodes[key] = _Node(key, step, model_lines(models.get(key, {})), "technique", parent)
                nodes[parent].children.append(key)
            parent = key
        leaf = f"{r.path}#int8"
        vela = r.vela[0] if r.vela else {}
        lines = [f"int8 acc {_fmt(r.int8_accuracy, '.3f')}"]
        if vela.get(t.INFERENCE_MS) is not None:
            lines.append(f"{vela[t.INFERENCE_MS]:.4g} ms")
        off_chip, kind = _off_chip(vela)
        if off_chip is not None:
            lines.append(f"{kind} {off_chip / 1024:.1f} KiB")
        elif r.tflite_bytes is not None:
            lines.append(f"{r.tflite_bytes / 1024:.1f} KiB")
        title = ("PTQ int8" if steps[-1] == "ptq" else "int8") + f"  [{r.path}]"
        nodes[leaf] = _Node(leaf, title, lines, "leaf", parent, record=r)
        nodes[parent].children.append(leaf)
    return nodes


def _layout(nodes: dict[str, _Node]) -> None:
    """Depth on x; leaves spread on y in depth-first order, parents centred on their children."""
    counter = [0]

    def visit(key: str, depth: int) -> float:
        node = nodes[key]
        node.x = depth
        kids = sorted(node.children, key=lambda k: (nodes[k].kind != "leaf",
                                                    leaf_sort_key(k.split("#")[0])))
        node.children = kids
        if not kids:
            node.y = counter[0]
            counter[0] += 1
        else:
            node.y = sum(visit(k, depth + 1) for k in kids) / len(kids)
        return node.y

    visit("base", 0)


def plot_tree(records: list[LeafRecord], models: dict[str, dict[str, Any]], focus: LeafRecord,
              selection: SelectionInfo, path: str) -> str:
    from matplotlib import pyplot as plt

    nodes = tree_nodes(records, models)
    _layout(nodes)
    depth = max(n.x for n in nodes.values())
    rows = max(n.y for n in nodes.values()) + 1
    fig, ax = plt.subplots(figsize=(2.4 * (depth + 1) + 1, 1.1 * rows + 1.3))
    on_path = set()
    key: Optional[str] = f"{focus.path}#int8"
    while key:
        on_path.add(key)
        key = nodes[key].parent
    for node in nodes.values():
        if node.parent:
            parent = nodes[node.parent]
            thick = node.key in on_path
            ax.plot([parent.x, parent.x + 0.5, parent.x + 0.5, node.x],
                    [parent.y, parent.y, node.y, node.y],
                    color=_SELECTED_COLOR if thick else "#9e9e9e", lw=3.2 if thick else 1.2,
                    zorder=1, solid_capstyle="round")
    for node in nodes.values():
        if node.kind == "leaf":
            r = node.record
            face = "#fff3c4" if r.selected else ("#e8f5e9" if r.blessed else "#fdecea")
            edge = _SELECTED_COLOR if r.selected else (_BLESSED_COLOR if r.blessed else _MISS_COLOR)
        else:
            face, edge = _NODE_COLOR, "#1565c0"
        text = node.label + "\n" + "\n".join(node.lines)
        if node.kind == "leaf" and node.record.selected:
            text = "★ SELECTED\n" + text
        ax.text(node.x, node.y, text, ha="center", va="center", fontsize=8, zorder=3,
                fontweight="bold" if node.key in on_path else "normal",
                bbox=dict(boxstyle="round,pad=0.4", facecolor=face, edgecolor=edge,
                          lw=2.2 if node.key in on_path else 1.0))
    ax.set_xlim(-0.6, depth + 0.6)
    ax.set_ylim(rows - 0.4, -0.6)
    ax.axis("off")
    title = ("deployment tree — selected: " + selection.selected_path if selection.selected_path
             else f"deployment tree — nothing selected (following {focus.path})")
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- weight densities --------------------------------------------------------------------------

def keras_kernels(model) -> dict[str, Any]:
    """Kernel arrays of Conv / Dense layers by layer name, as core.metrics measures them."""
    import numpy as np

    from collabopt.components.core import metrics

    return {name: np.asarray(values, dtype=np.float64)
            for name, values, _ in metrics.keras_kernels(model)}


def tflite_kernels(tflite_bytes: bytes) -> dict[str, tuple[Any, Any]]:
    """Kernels of the `.tflite` by layer name: (stored values, dequantized values)."""
    from collabopt.components.core import metrics

    return {k.name: (k.values, k.dequantized()) for k in metrics.tflite_kernels(tflite_bytes)}


def _stage_label(a) -> str:
    path = a.properties.get(t.TECHNIQUE_PATH) or "base"
    if a.type == t.TFLiteModel.TYPE_NAME:
        return f"int8 .tflite ({path})"
    if path == "base":
        return "float base model"
    step = template_of(path).split(">")[-1]
    words = {"prune": "pruned", "cluster": "clustered", "qat": "QAT", "pqat": "PQAT",
             "cqat": "CQAT", "pcqat": "PCQAT"}
    return f"{words.get(step, step)} ({path})"


def weight_densities(store, lineage: Lineage, focus: LeafRecord, path: str) -> dict[str, Any]:
    """Histogram of one kernel at each stage of the focus leaf's path; a reason when impossible."""
    import numpy as np
    from matplotlib import pyplot as plt
    from tfx.types import standard_artifacts

    from collabopt.components import artifact_io

    if focus.tflite_id not in lineage.artifacts:
        return {"reason": f"the lineage of {focus.path} holds no .tflite", "stages": []}
    # From the leaf's .tflite back to the base model, then in the order the steps ran.
    chain = [a for a in reversed(lineage.chain(focus.tflite_id))
             if a.type in ("Model", t.TFLiteModel.TYPE_NAME)]
    protos = {p.id: p for p in store.get_artifacts_by_id([a.id for a in chain])}
    # A remote URI (gs://, s3:// of a Kubeflow run) fails in TensorFlow's file system when this
    # machine cannot reach the bucket: that is a reason, not a crash.
    from tensorflow import errors as tf_errors

    stages = []   # (artifact node, {name: float array}, {name: int array} or None)
    try:
        for a in chain:
            if a.type == "Model":
                artifact = standard_artifacts.Model()
                artifact.set_mlmd_artifact(protos[a.id])
                stages.append((a, keras_kernels(artifact_io.load_model(artifact)), None))
            else:
                data = artifact_io.read_bytes(a.uri, t.TFLITE_FILE_NAME)
                kernels = tflite_kernels(data)
                stages.append((a, {k: v[1] for k, v in kernels.items()},
                               {k: v[0] for k, v in kernels.items()}))
    except (CollaboptError, OSError, ValueError, tf_errors.OpError) as exc:
        return {"reason": f"could not load a model of the path: {exc}", "stages": []}
    keras_stages = [s for s in stages if s[2] is None]
    if not keras_stages:
        return {"reason": "no Keras model on the path", "stages": []}
    common = set.intersection(*(set(k) for _, k, _ in stages))
    if not common:
        return {"reason": "no Conv2D / Dense kernel is present (by name) in every model of "
                          "the path", "stages": []}
    name = max(sorted(common), key=lambda n: keras_stages[0][1][n].size)

    fig, axes = plt.subplots(len(stages), 1, figsize=(10, 2.1 * len(stages) + 0.6), sharex=True)
    axes = np.atleast_1d(axes)
    everything = np.concatenate([k[name].ravel() for _, k, _ in stages])
    lo, hi = float(everything.min()), float(everything.max())
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 161)
    rows = []
    for ax, (a, kernels, stored) in zip(axes, stages):
        values = kernels[name].ravel()
        raw = stored[name].ravel() if stored is not None else values
        sparsity = float(np.count_nonzero(raw == 0)) / raw.size
        unique = int(np.unique(raw).size)
        color = "#6a1b9a" if stored is not None else "#1565c0"
        ax.hist(values, bins=bins, color=color, alpha=0.85, log=True)
        ax.set_title(f"{_stage_label(a)} — #{a.id}: sparsity {sparsity:.1%}, "
                     f"{unique} unique values", fontsize=9.5, loc="left")
        ax.set_ylabel("count")
        ax.grid(alpha=0.25)
        rows.append({"label": _stage_label(a), "type": a.type, "id": a.id,
                     "sparsity": f"{sparsity:.1%}", "unique": unique, "uri": a.uri})
    axes[-1].set_xlabel(f"kernel '{name}' weight value")
    fig.suptitle(f"Weights of '{name}' along {focus.path}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"kernel": name, "size": int(keras_stages[0][1][name].size), "stages": rows,
            "reason": ""}


__all__ = ["build_report", "focus_leaf", "pareto_front", "tree_nodes", "keras_kernels",
           "tflite_kernels", "weight_densities"]
