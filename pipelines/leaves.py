"""The leaves table `collabopt leaves` and `collabopt run` print (the records are read by
`collabopt.pipelines.metadata.leaves`)."""
from __future__ import annotations

from typing import Any, Optional

from rich.console import Console, Group, RenderableType
from rich.text import Text

from collabopt.components import types as t
from collabopt.pipelines.metadata.leaves import LeafRecord
from collabopt.pipelines.tables import ColumnSpec, fit_table

TITLE = "Leaves of the deployment tree"
COLUMNS = [
    ColumnSpec("leaf", min_width=19),
    ColumnSpec("int8 acc", "right", "accuracy"), ColumnSpec("drop", "right", "accuracy"),
    ColumnSpec("tflite B", "right", "size"), ColumnSpec("gzip B", "right", "size"),
    ColumnSpec("arena B", "right", "size"),
    ColumnSpec("sparsity", "right", "structure"), ColumnSpec("uniq/ch", "right", "structure"),
    ColumnSpec("target", "left", "vela", group_key=True), ColumnSpec("ms", "right", "vela"),
    ColumnSpec("SRAM B", "right", "vela"), ColumnSpec("flash/DRAM B", "right", "vela"),
    ColumnSpec("NPU/CPU ops", "right", "vela"),
    ColumnSpec("verdict"),
]
VERDICT = len(COLUMNS) - 1


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _off_chip(vela: dict[str, Any]) -> str:
    """Weights live in flash (Shared_Sram) or DRAM (Dedicated_Sram): show whichever is used."""
    dram = vela.get(t.DRAM_BYTES)
    if dram and not vela.get(t.FLASH_BYTES):
        return f"{dram:,} (DRAM)"
    return _fmt(vela.get(t.FLASH_BYTES), ",")


def _arena(r: LeafRecord) -> str:
    """TFLM's tensor arena, or the operators TFLM cannot run."""
    if r.arena_bytes is not None:
        return format(r.arena_bytes, ",")
    return "no TFLM: " + ", ".join(r.tflm_unsupported_ops) if r.tflm_unsupported_ops else "-"


def _vela_cells(vela: dict[str, Any]) -> list[str]:
    return [str(vela.get("name") or vela.get(t.TARGET) or "-"),
            _fmt(vela.get(t.INFERENCE_MS), ".4f"),
            _fmt(vela.get(t.SRAM_BYTES), ","), _off_chip(vela),
            f"{_fmt(vela.get(t.NPU_OPS), 'd')}/{_fmt(vela.get(t.CPU_OPS), 'd')}"]


def _verdict(selected: bool, blessed: bool, reasons: list[str], failed: bool) -> str:
    return ("[bold green]SELECTED[/]" if selected else
            "[green]meets thresholds[/]" if blessed else
            "[bold red]FAILED[/] [red]" + "; ".join(reasons) + "[/]" if failed else
            "[red]" + "; ".join(reasons) + "[/]")


def _target_verdict(r: LeafRecord, vela: dict[str, Any]) -> str:
    """A further target's own verdict (runs judged per target), prefixed by its name."""
    if vela.get("selected") is None:
        return ""
    verdict = _verdict(bool(vela["selected"]), bool(vela.get("blessed")),
                       list(vela.get("reasons") or []), r.failure is not None)
    return f"{vela.get('name')}: {verdict}"


def leaves_rows(records: list[LeafRecord]) -> list[list[str]]:
    """One row per leaf (its first target), then one row per further target with that target's
    verdict when the run judged each target."""
    rows = []
    for r in records:
        verdict = _verdict(r.selected, r.blessed, r.reasons, r.failure is not None)
        if len(r.vela) > 1 and r.vela[0].get("selected") is not None:
            verdict = f"{r.vela[0].get('name')}: {verdict}"
        rows.append([r.path, _fmt(r.int8_accuracy, ".4f"), _fmt(r.accuracy_drop, "+.4f"),
                     _fmt(r.tflite_bytes, ","), _fmt(r.gzip_bytes, ","), _arena(r),
                     _fmt(r.sparsity, ".2f"), _fmt(r.max_unique_per_channel, "d"),
                     *_vela_cells(r.vela[0] if r.vela else {}), verdict])
        for extra in r.vela[1:]:
            rows.append(["", "", "", "", "", "", "", "", *_vela_cells(extra),
                         _target_verdict(r, extra)])
    return rows


def winners(records: list[LeafRecord]) -> list[tuple[str, Optional[str]]]:
    """(target, the leaf selected for it or None) per target, primary first, for runs that
    selected per target (empty otherwise)."""
    names: list[str] = []
    for r in records:
        for v in r.vela:
            if v.get("selected") is not None and v.get("name") not in names:
                names.append(v.get("name"))
    return [(name, next((r.path for r in records for v in r.vela
                         if v.get("name") == name and v.get("selected")), None))
            for name in names]


def leaves_table(records: list[LeafRecord], console: Optional[Console] = None,
                 width: Optional[int] = None) -> RenderableType:
    """The leaves table, fitted to `width` (default: the console's) without cutting a number;
    with several targets judged, a line per target naming its selected leaf follows."""
    console = console or Console()
    table = fit_table(console, TITLE, COLUMNS, leaves_rows(records), width=width,
                      note_column=VERDICT)
    chosen = winners(records)
    if len(chosen) < 2:
        return table
    lines = [Text.assemble(("Selected per target: ", "bold"))]
    for name, path in chosen:
        lines.append(Text.assemble(f"  {name}: ", (path or "none meets the thresholds",
                                                  "bold green" if path else "red")))
    return Group(table, *lines)
