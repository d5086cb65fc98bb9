"""Entry points for readers: open a store read-only, choose the run, read what it holds.

Each takes the store's URI (shown redacted in messages) and, optionally, a store already opened
with `store.open_store` (the CLI opens it first: a bad store fails fast, before TensorFlow loads).
"""
from __future__ import annotations

from typing import Optional

from ml_metadata.metadata_store import metadata_store

from collabopt.components.core.errors import CollaboptError
from collabopt.pipelines.metadata.leaves import LeafRecord
from collabopt.pipelines.metadata.lineage import Lineage, selected_model, trace
from collabopt.pipelines.metadata.reader import Reader, detect_layout
from collabopt.pipelines.metadata.runs import Choice, RunInfo, choose_run, list_runs
from collabopt.pipelines.metadata.store import open_store, redact

Store = Optional[metadata_store.MetadataStore]


def open_reader(metadata_uri: str, store: Store = None) -> Reader:
    """A reader of the store in the layout its runs were written in (TFX's, or KFP v2's)."""
    store = store or open_store(metadata_uri, readonly=True)
    return Reader(store, detect_layout(store))


def read_run(metadata_uri: str, run_id: Optional[str] = None, store: Store = None) -> Choice:
    """The run to show (`run_id`, else the latest that evaluated leaves) with its leaves."""
    return choose_run(open_reader(metadata_uri, store), run_id, where=redact(metadata_uri))


def read_leaves(metadata_uri: str, run_id: Optional[str] = None,
                store: Store = None) -> list[LeafRecord]:
    return read_run(metadata_uri, run_id, store).shown.records


def read_runs(metadata_uri: str, store: Store = None) -> list[RunInfo]:
    return list_runs(open_reader(metadata_uri, store))


def read_lineage(metadata_uri: str, artifact_id: Optional[int] = None, selected: bool = False,
                 run_id: Optional[str] = None, full: bool = False,
                 store: Store = None) -> Lineage:
    """The lineage of `artifact_id`, or (selected=True) of the selected model of the run
    (`run_id`, else the latest run that evaluated leaves)."""
    if (artifact_id is None) == (not selected):
        raise CollaboptError("Give exactly one of an ARTIFACT_ID or --selected.")
    reader = open_reader(metadata_uri, store)
    shown = redact(metadata_uri)
    if not selected:
        return trace(reader, artifact_id, shown, full=full)
    choice = choose_run(reader, run_id, where=shown)
    run = reader.run(choice.shown.run_id)
    lineage = trace(reader, selected_model(reader, run, shown).id, shown, full=full)
    lineage.run = run.name
    return lineage
