"""Typed custom properties on artifacts: the one way executors write and read measured numbers."""
from __future__ import annotations

import json
from typing import Any, Mapping

from ml_metadata.proto import metadata_store_pb2
from tfx.types import artifact as artifact_lib


def set_properties(artifact: artifact_lib.Artifact, values: Mapping[str, Any]) -> None:
    """bool/int -> int, float -> float, str -> str, list/dict -> JSON string; None is skipped."""
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            artifact.set_int_custom_property(name, int(value))
        elif isinstance(value, int):
            artifact.set_int_custom_property(name, value)
        elif isinstance(value, float):
            artifact.set_float_custom_property(name, value)
        elif isinstance(value, str):
            artifact.set_string_custom_property(name, value)
        elif isinstance(value, (list, tuple, dict)):
            artifact.set_string_custom_property(name, json.dumps(value, sort_keys=True))
        else:
            raise TypeError(f"Property {name!r}: unsupported type {type(value).__name__}")


def property_value(value: metadata_store_pb2.Value, default: Any = None) -> Any:
    """The int, float or str held by an MLMD property value (`default` for other kinds)."""
    kind = value.WhichOneof("value")
    return {"int_value": value.int_value, "double_value": value.double_value,
            "string_value": value.string_value}.get(kind, default)


def get_property(artifact: artifact_lib.Artifact, name: str, default: Any = None) -> Any:
    """A custom property's value (int, float or str), or `default` when it is not set.

    On Kubeflow an input artifact's properties arrive as KFP metadata, which TFX's container
    entrypoint stores as JSON (struct) values, numbers as floats: those are returned as such.
    """
    if not artifact.has_custom_property(name):
        return default
    value = artifact.mlmd_artifact.custom_properties[name]
    if value.WhichOneof("value") == "struct_value":
        json_value = artifact.get_json_value_custom_property(name)
        return default if json_value is None else json_value
    return property_value(value, default)
