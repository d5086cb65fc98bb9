"""Every leaf of a pipeline run with its metrics, read from ML Metadata alone."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from rich.table import Table

from collabopt.components import types as t
from collabopt.components.core.errors import CollaboptError
from collabopt.components.core.leaves import sort_key as leaf_sort_key
from collabopt.components.properties import property_value
from collabopt.pipelines import mlmd

PIPELINE_RUN_CONTEXT = "pipeline_run"


def artifact_properties(artifact: metadata_store_pb2.Artifact) -> dict[str, Any]:
    props = {k: property_value(v) for k, v in artifact.properties.items()}
    props.update({k: property_value(v) for k, v in artifact.custom_properties.items()})
    return props


@dataclasses.dataclass
class RunArtifacts:
    """The artifacts a pipeline run produced (or reused from the cache), by type name."""

    run_id: str
    by_type: dict[str, list[metadata_store_pb2.Artifact]]

    def of_type(self, type_name: str) -> list[metadata_store_pb2.Artifact]:
        return self.by_type.get(type_name, [])


def latest_run(store: metadata_store.MetadataStore, run_id: Optional[str] = None,
               pipeline_name: Optional[str] = None) -> metadata_store_pb2.Context:
    runs = store.get_contexts_by_type(PIPELINE_RUN_CONTEXT)
    if run_id is not None:
        runs = [c for c in runs if c.name == run_id]
        if not runs:
            raise CollaboptError(f"No pipeline run {run_id!r} in this ML Metadata store.")
    if pipeline_name is not None:
        pipelines = {c.id for c in store.get_contexts_by_type("pipeline") if c.name == pipeline_name}
        runs = [r for r in runs if any(
            p.id in pipelines for p in store.get_parent_contexts_by_context(r.id))] or runs
    if not runs:
        raise CollaboptError("This ML Metadata store holds no pipeline run yet: run a pipeline first "
                             "(`collabopt demo` or `collabopt run pipeline.yaml`).")
    return max(runs, key=lambda c: (c.create_time_since_epoch, c.id))


def run_artifacts(store: metadata_store.MetadataStore, run: metadata_store_pb2.Context) -> RunArtifacts:
    """Output artifacts of every execution in the run (cached executions included)."""
    executions = store.get_executions_by_context(run.id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    ids = sorted({e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT})
    ids += [a.id for a in store.get_artifacts_by_context(run.id) if a.id not in set(ids)]
    artifacts = store.get_artifacts_by_id(sorted(set(ids)))
    type_names = {at.id: at.name for at in store.get_artifact_types_by_id(
        sorted({a.type_id for a in artifacts}))}
    by_type: dict[str, list] = {}
    for artifact in artifacts:
        if artifact.state == metadata_store_pb2.Artifact.LIVE:
            by_type.setdefault(type_names[artifact.type_id], []).append(artifact)
    return RunArtifacts(run.name, by_type)


@dataclasses.dataclass
class LeafRecord:
    path: str
    uri: str
    int8_accuracy: Optional[float]
    accuracy_drop: Optional[float]
    tflite_bytes: Optional[int]
    gzip_bytes: Optional[int]
    sparsity: Optional[float]
    max_unique_per_kernel: Optional[int]
    max_unique_per_channel: Optional[int]
    vela: list[dict[str, Any]]
    blessed: bool
    selected: bool
    reasons: list[str]
    evaluation_id: int
    tflite_id: Optional[int]
    failure: Optional[dict[str, str]] = None   # a failed leaf: step, path, error, message, hint

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_VELA_FIELDS = (t.TARGET, t.CYCLES, t.INFERENCE_MS, t.SRAM_BYTES, t.FLASH_BYTES, t.DRAM_BYTES,
                t.NPU_OPS, t.CPU_OPS)


def leaves_of_run(run: RunArtifacts) -> list[LeafRecord]:
    tflites = {artifact_properties(a).get(t.TECHNIQUE_PATH): a for a in run.of_type(t.TFLiteModel.TYPE_NAME)}
    velas: dict[str, list] = {}
    for artifact in run.of_type(t.VelaModel.TYPE_NAME):
        props = artifact_properties(artifact)
        velas.setdefault(props.get(t.TECHNIQUE_PATH), []).append(
            {field: props.get(field) for field in _VELA_FIELDS})
    selected_paths = {artifact_properties(b).get(t.SELECTED_PATH)
                      for b in run.of_type("ModelBlessing")} - {None, ""}
    records = []
    for evaluation in run.of_type("ModelEvaluation"):
        props = artifact_properties(evaluation)
        path = props.get(t.TECHNIQUE_PATH)
        if path is None:
            continue
        tflite = tflites.get(path)
        tprops = artifact_properties(tflite) if tflite else {}
        reasons = props.get(t.REASONS)
        records.append(LeafRecord(
            path=path,
            uri=tflite.uri if tflite else props.get(t.TFLITE_URI, ""),
            int8_accuracy=props.get(t.INT8_ACCURACY),
            accuracy_drop=props.get(t.ACCURACY_DROP),
            tflite_bytes=tprops.get(t.TFLITE_BYTES, props.get(t.TFLITE_BYTES)),
            gzip_bytes=tprops.get(t.GZIP_BYTES),
            sparsity=tprops.get(t.SPARSITY),
            max_unique_per_kernel=tprops.get(t.MAX_UNIQUE_PER_KERNEL),
            max_unique_per_channel=tprops.get(t.MAX_UNIQUE_PER_CHANNEL),
            vela=sorted(velas.get(path, []), key=lambda v: str(v[t.TARGET])),
            blessed=bool(props.get(t.BLESSED, 0)),
            selected=path in selected_paths,
            reasons=json.loads(reasons) if reasons else [],
            evaluation_id=evaluation.id,
            tflite_id=tflite.id if tflite else None,
            failure=json.loads(props[t.FAILURE]) if props.get(t.FAILED) else None,
        ))
    return sorted(records, key=lambda r: leaf_sort_key(r.path))


def read_leaves(metadata_uri: str, run_id: Optional[str] = None) -> list[LeafRecord]:
    store = mlmd.open_store(metadata_uri)
    return leaves_of_run(run_artifacts(store, latest_run(store, run_id)))


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _off_chip(vela: dict[str, Any]) -> str:
    """Weights live in flash (Shared_Sram) or DRAM (Dedicated_Sram): show whichever is used."""
    dram = vela.get(t.DRAM_BYTES)
    if dram and not vela.get(t.FLASH_BYTES):
        return f"{dram:,} (DRAM)"
    return _fmt(vela.get(t.FLASH_BYTES), ",")


def leaves_table(records: list[LeafRecord]) -> Table:
    table = Table(title="Leaves of the deployment tree", show_lines=False)
    table.add_column("leaf", no_wrap=True, min_width=19)
    for name, justify in [ ("int8 acc", "right"), ("drop", "right"),
                          ("tflite B", "right"), ("gzip B", "right"), ("sparsity", "right"),
                          ("uniq/ch", "right"), ("target", "left"), ("ms", "right"),
                          ("SRAM B", "right"), ("flash/DRAM B", "right"), ("NPU/CPU ops", "right"),
                          ("verdict", "left")]:
        table.add_column(name, justify=justify, no_wrap=name in ("target", "verdict"))
    for r in records:
        first = r.vela[0] if r.vela else {}
        verdict = ("[bold green]SELECTED[/]" if r.selected else
                   "[green]meets thresholds[/]" if r.blessed else
                   "[bold red]FAILED[/] [red]" + "; ".join(r.reasons)[:120] + "[/]" if r.failure else
                   "[red]" + "; ".join(r.reasons)[:80] + "[/]")
        table.add_row(
            r.path, _fmt(r.int8_accuracy, ".4f"), _fmt(r.accuracy_drop, "+.4f"),
            _fmt(r.tflite_bytes, ","), _fmt(r.gzip_bytes, ","), _fmt(r.sparsity, ".2f"),
            _fmt(r.max_unique_per_channel, "d"), str(first.get(t.TARGET, "-")),
            _fmt(first.get(t.INFERENCE_MS), ".4f"), _fmt(first.get(t.SRAM_BYTES), ","),
            _off_chip(first),
            f"{_fmt(first.get(t.NPU_OPS), 'd')}/{_fmt(first.get(t.CPU_OPS), 'd')}", verdict)
        for extra in r.vela[1:]:
            table.add_row("", "", "", "", "", "", "", str(extra.get(t.TARGET)),
                          _fmt(extra.get(t.INFERENCE_MS), ".4f"), _fmt(extra.get(t.SRAM_BYTES), ","),
                          _off_chip(extra),
                          f"{_fmt(extra.get(t.NPU_OPS), 'd')}/{_fmt(extra.get(t.CPU_OPS), 'd')}", "")
    return table
