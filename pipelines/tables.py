"""Tables that fit the width they are printed in without cutting a value.

A rich Table squeezed below its natural width shortens cells with "…", so `0.9688` can print as
`0.9…`. `fit_table` never lets that happen: when the whole table does not fit, the note column
(e.g. a verdict) moves below the table as wrapped lines, and then the other columns are split,
group by group, into several tables that each repeat the key column(s).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

_NATURAL = 100_000                            # a width no table reaches: measure unwrapped


@dataclasses.dataclass(frozen=True)
class ColumnSpec:
    header: str
    justify: str = "left"
    group: str = ""                           # columns of one group stay in one table if they can
    min_width: Optional[int] = None
    group_key: bool = False                   # repeated in every table that holds its group


def _table(title: Optional[str], columns: Sequence[ColumnSpec], rows: Sequence[Sequence],
           indices: Sequence[int]) -> Table:
    table = Table(title=title, show_lines=False)
    for i in indices:
        spec = columns[i]
        # fold, never ellipsis: at worst a value wraps onto a second line, whole.
        table.add_column(spec.header, justify=spec.justify, overflow="fold",
                         min_width=spec.min_width)
    for row in rows:
        table.add_row(*(row[i] for i in indices))
    return table


def _natural_width(console: Console, table: Table) -> int:
    return console.measure(table, options=console.options.update_width(_NATURAL)).maximum


def fit_table(console: Console, title: Optional[str], columns: Sequence[ColumnSpec],
              rows: Sequence[Sequence[RenderableType]], width: Optional[int] = None,
              key_columns: int = 1, note_column: Optional[int] = None) -> RenderableType:
    """One table when it fits `width` (default: the console's), else the note column as lines
    below the table (`<key>: <note>`), else the columns split into tables by group."""
    width = width or console.width
    everything = list(range(len(columns)))
    whole = _table(title, columns, rows, everything)
    if _natural_width(console, whole) <= width:
        return whole
    body = [i for i in everything if i != note_column]
    notes = []
    if note_column is not None:
        for row in rows:
            note = row[note_column]
            if note and (not isinstance(note, Text) or note.plain):
                # A row without a key continues the row above it (e.g. a further target).
                key = Text(str(row[0]) + ": ", style="bold") if row[0] else Text("  ")
                line = Text.assemble(key,
                                     note if isinstance(note, Text) else Text.from_markup(note))
                notes.append(line)
    keys = body[:key_columns]
    groups: dict[str, list[int]] = {}
    for i in body[key_columns:]:
        groups.setdefault(columns[i].group or columns[i].header, []).append(i)
    fits = lambda indices: _natural_width(console, _table(None, columns, rows, indices)) <= width
    chunks: list[list[int]] = []              # column groups, split where one is too wide
    for members in groups.values():
        if fits(keys + members):
            chunks.append(members)
            continue
        group_keys = [i for i in members if columns[i].group_key]
        chunk = list(group_keys)
        for i in members:
            if i in group_keys:
                continue
            if chunk != group_keys and not fits(keys + chunk + [i]):
                chunks.append(chunk)
                chunk = list(group_keys)
            chunk.append(i)
        chunks.append(chunk)
    tables: list[Table] = []
    current = list(keys)
    for chunk in chunks:
        if current == keys or fits(current + chunk):
            current = current + chunk
            continue
        tables.append(_table(title if not tables else None, columns, rows, current))
        current = keys + chunk
    tables.append(_table(title if not tables else None, columns, rows, current))
    return Group(*tables, *notes)
