"""The leaves table `collabopt leaves` and `collabopt run` print (the records are read by
`collabopt.pipelines.metadata.leaves`)."""
from __future__ import annotations

from typing import Any, Optional

from rich.console import Console, RenderableType

from collabopt.components import types as t
from collabopt.pipelines.metadata.leaves import LeafRecord
from collabopt.pipelines.tables import ColumnSpec, fit_table

TITLE = "Leaves of the deployment tree"
COLUMNS = [
    ColumnSpec("leaf", min_width=19),
    ColumnSpec("int8 acc", "right", "accuracy"), ColumnSpec("drop", "right", "accuracy"),
    ColumnSpec("tflite B", "right", "size"), ColumnSpec("gzip B", "right", "size"),
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


def _vela_cells(vela: dict[str, Any]) -> list[str]:
    return [str(vela.get(t.TARGET, "-")), _fmt(vela.get(t.INFERENCE_MS), ".4f"),
            _fmt(vela.get(t.SRAM_BYTES), ","), _off_chip(vela),
            f"{_fmt(vela.get(t.NPU_OPS), 'd')}/{_fmt(vela.get(t.CPU_OPS), 'd')}"]


def leaves_rows(records: list[LeafRecord]) -> list[list[str]]:
    """One row per leaf (its first target), then one row per further target."""
    rows = []
    for r in records:
        verdict = ("[bold green]SELECTED[/]" if r.selected else
                   "[green]meets thresholds[/]" if r.blessed else
                   "[bold red]FAILED[/] [red]" + "; ".join(r.reasons) + "[/]" if r.failure else
                   "[red]" + "; ".join(r.reasons) + "[/]")
        rows.append([r.path, _fmt(r.int8_accuracy, ".4f"), _fmt(r.accuracy_drop, "+.4f"),
                     _fmt(r.tflite_bytes, ","), _fmt(r.gzip_bytes, ","), _fmt(r.sparsity, ".2f"),
                     _fmt(r.max_unique_per_channel, "d"),
                     *_vela_cells(r.vela[0] if r.vela else {}), verdict])
        for extra in r.vela[1:]:
            rows.append(["", "", "", "", "", "", "", *_vela_cells(extra), ""])
    return rows


def leaves_table(records: list[LeafRecord], console: Optional[Console] = None,
                 width: Optional[int] = None) -> RenderableType:
    """The leaves table, fitted to `width` (default: the console's) without cutting a number."""
    console = console or Console()
    return fit_table(console, TITLE, COLUMNS, leaves_rows(records), width=width, note_column=VERDICT)
