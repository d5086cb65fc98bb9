"""Every leaf of a pipeline run with its metrics, read from ML Metadata alone."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

from collabopt.components import types as t
from collabopt.components.core.leaves import sort_key as leaf_sort_key
from collabopt.pipelines.metadata.reader import RunArtifacts, artifact_properties


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
    arena_bytes: Optional[int] = None          # TFLM's tensor arena (None: TFLM cannot run it)
    tflm_unsupported_ops: Optional[list[str]] = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_VELA_FIELDS = (t.TARGET, t.CYCLES, t.INFERENCE_MS, t.SRAM_BYTES, t.FLASH_BYTES, t.DRAM_BYTES,
                t.NPU_OPS, t.CPU_OPS)


@dataclasses.dataclass
class TargetSelection:
    """The leaf a Selector chose for one Ethos-U target (`primary`: the one that is pushed)."""

    target: Optional[str]
    primary: bool
    selected_path: str
    closest_path: str
    explanation: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def selections_of_run(run: RunArtifacts) -> list[TargetSelection]:
    """The final Selector's choice per target, primary first (gates of progressive mode, which
    judge the primary target only, are left out when the final Selector's blessing is there)."""
    found: dict[Optional[str], TargetSelection] = {}
    for blessing in sorted(run.of_type("ModelBlessing"), key=lambda a: a.id):
        props = artifact_properties(blessing)
        if t.EXPLANATION not in props:
            continue                      # an Evaluator's blessing
        target = props.get(t.TARGET)
        primary = bool(props.get(t.PRIMARY, 1))
        if primary and None in found and target is not None:
            del found[None]               # a gate's blessing, superseded by the final one's
        found[target] = TargetSelection(target, primary, props.get(t.SELECTED_PATH) or "",
                                        props.get(t.CLOSEST_PATH) or "",
                                        props.get(t.EXPLANATION) or "")
    return sorted(found.values(), key=lambda s: not s.primary)


def leaves_of_run(run: RunArtifacts) -> list[LeafRecord]:
    tflites = {artifact_properties(a).get(t.TECHNIQUE_PATH): a for a in run.of_type(t.TFLiteModel.TYPE_NAME)}
    velas: dict[str, list] = {}
    for artifact in run.of_type(t.VelaModel.TYPE_NAME):
        props = artifact_properties(artifact)
        velas.setdefault(props.get(t.TECHNIQUE_PATH), []).append(
            {field: props.get(field) for field in _VELA_FIELDS} | {"_uri": artifact.uri})
    primary_blessings = [b for b in run.of_type("ModelBlessing")
                         if artifact_properties(b).get(t.PRIMARY, 1)]
    selected_paths = {artifact_properties(b).get(t.SELECTED_PATH)
                      for b in primary_blessings} - {None, ""}
    winners = {s.target: s.selected_path for s in selections_of_run(run)}
    records = []
    for evaluation in run.of_type("ModelEvaluation"):
        props = artifact_properties(evaluation)
        path = props.get(t.TECHNIQUE_PATH)
        if path is None:
            continue
        tflite = tflites.get(path)
        tprops = artifact_properties(tflite) if tflite else {}
        reasons = props.get(t.REASONS)
        unsupported = tprops.get(t.TFLM_UNSUPPORTED_OPS, props.get(t.TFLM_UNSUPPORTED_OPS))
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
            vela=_targets(props, velas.get(path, []), winners, path),
            blessed=bool(props.get(t.BLESSED, 0)),
            selected=path in selected_paths,
            reasons=json.loads(reasons) if reasons else [],
            evaluation_id=evaluation.id,
            tflite_id=tflite.id if tflite else None,
            failure=json.loads(props[t.FAILURE]) if props.get(t.FAILED) else None,
            arena_bytes=tprops.get(t.ARENA_BYTES, props.get(t.ARENA_BYTES)),
            tflm_unsupported_ops=json.loads(unsupported) if unsupported else [],
        ))
    return sorted(records, key=lambda r: leaf_sort_key(r.path))


# Where KFP v2's launcher mounts a bucket in the step's container: a step that wrote through the
# mount records the local path, while ML Metadata holds the bucket URI.
_LAUNCHER_MOUNTS = {"gs://": "/gcs/", "minio://": "/minio/", "s3://": "/s3/"}


def _place(uri: Optional[str]) -> Optional[str]:
    """`uri` as the path a step sees, so a bucket URI and its mounted path compare equal."""
    if not uri:
        return uri
    for scheme, mount in _LAUNCHER_MOUNTS.items():
        if uri.startswith(scheme):
            uri = mount + uri[len(scheme):]
    return uri.rstrip("/")


def _targets(evaluation: dict[str, Any], velas: list[dict[str, Any]], winners: dict,
             path: str) -> list[dict[str, Any]]:
    """The leaf's Vela figures per target, primary first, each with its name, verdict (`blessed`,
    `reasons`) and whether the Selector chose this leaf for it (`selected`).

    The evaluation's `per_target` gives the order and the verdicts; a leaf evaluated for one
    target (or an older run) has only its VelaModels, sorted by accelerator."""
    entries = json.loads(evaluation[t.PER_TARGET]) if evaluation.get(t.PER_TARGET) else []
    if not entries:
        return [{**{k: x for k, x in v.items() if k != "_uri"}, "name": v.get(t.TARGET),
                 "selected": None} for v in sorted(velas, key=lambda v: str(v[t.TARGET]))]
    by_place = {_place(v.pop("_uri", None)): v for v in velas}
    rows = []
    for entry in entries:
        vela = by_place.get(_place(entry.get(t.VELA_URI)), {})
        row = {field: entry.get(field, vela.get(field)) for field in _VELA_FIELDS}
        row[t.TARGET] = entry.get("accelerator_config") or vela.get(t.TARGET)
        row[t.CYCLES] = vela.get(t.CYCLES)
        name = entry.get("target")
        row.update(name=name, blessed=bool(entry.get("blessed")), reasons=entry.get("reasons", []),
                   selected=(winners[name] == path) if name in winners else None)
        rows.append(row)
    return rows
