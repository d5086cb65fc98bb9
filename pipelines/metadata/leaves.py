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
