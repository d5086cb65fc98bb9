"""Shared pieces of the six ComponentSpecs and constructors (the TFX side of collabopt.components.params)."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

from tfx.dsl.placeholder import placeholder_base
from tfx.orchestration import data_types
from tfx.types.component_spec import ExecutionParameter

from collabopt.components import keys, params
from collabopt.components.core.errors import ConfigError

# Parameters of every component that reads Examples.
DATA_PARAMETERS = {
    keys.FEATURE_KEY_KEY: ExecutionParameter(type=str),
    keys.LABEL_KEY_KEY: ExecutionParameter(type=str),
    keys.FEATURE_SHAPE_KEY: ExecutionParameter(type=str, optional=True),
    keys.FEATURE_DTYPE_KEY: ExecutionParameter(type=str),
    keys.FEATURE_SCALE_KEY: ExecutionParameter(type=float),
    keys.BATCH_SIZE_KEY: ExecutionParameter(type=int),
}

# Parameters of the steps that fine-tune (Pruner / SparseClusterer / PreservingQAT).
TRAINING_PARAMETERS = {
    keys.EPOCHS_KEY: ExecutionParameter(type=int, optional=True),
    keys.MAX_EPOCHS_KEY: ExecutionParameter(type=int),
    keys.PATIENCE_KEY: ExecutionParameter(type=int),
    keys.RECOVERY_TOLERANCE_KEY: ExecutionParameter(type=float),
    keys.VALIDATION_FRACTION_KEY: ExecutionParameter(type=float),
    keys.LEARNING_RATE_KEY: ExecutionParameter(type=float),
    keys.SEED_KEY: ExecutionParameter(type=int, optional=True),
}

StrList = Optional[Union[str, Sequence[str]]]
IntList = Optional[Union[str, Sequence[int]]]


def data_props(feature_key: str, label_key: str, feature_shape: IntList, feature_dtype: str,
               feature_scale: float, batch_size: int) -> dict[str, Any]:
    """The data parameters as execution properties (lists become strings)."""
    return {
        keys.FEATURE_KEY_KEY: feature_key,
        keys.LABEL_KEY_KEY: label_key,
        keys.FEATURE_SHAPE_KEY: int_list_str(feature_shape),
        keys.FEATURE_DTYPE_KEY: feature_dtype,
        keys.FEATURE_SCALE_KEY: as_float(keys.FEATURE_SCALE_KEY, feature_scale),
        keys.BATCH_SIZE_KEY: batch_size,
    }


def training_props(epochs: Optional[int], learning_rate: float,
                   max_epochs: int = params.DEFAULT_MAX_EPOCHS,
                   patience: int = params.DEFAULT_PATIENCE,
                   recovery_tolerance: float = params.DEFAULT_RECOVERY_TOLERANCE,
                   validation_fraction: float = params.DEFAULT_VALIDATION_FRACTION,
                   seed: Optional[int] = params.DEFAULT_SEED) -> dict[str, Any]:
    """The fine-tuning parameters as execution properties (epochs None: until recovered)."""
    return {keys.EPOCHS_KEY: epochs,
            keys.MAX_EPOCHS_KEY: max_epochs,
            keys.PATIENCE_KEY: patience,
            keys.RECOVERY_TOLERANCE_KEY: as_float(keys.RECOVERY_TOLERANCE_KEY,
                                                  recovery_tolerance),
            keys.VALIDATION_FRACTION_KEY: as_float(keys.VALIDATION_FRACTION_KEY,
                                                   validation_fraction),
            keys.LEARNING_RATE_KEY: as_float(keys.LEARNING_RATE_KEY, learning_rate),
            keys.SEED_KEY: seed}


def as_float(name: str, value: Any) -> Any:
    """Ints are accepted where a float is meant (TFX type-checks float parameters strictly)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if value is not None and not isinstance(value, (float, str)) and not _is_placeholder(value):
        raise ConfigError(f"{name}={value!r} must be a number.")
    return value


def as_int(name: str, value: Any) -> Any:
    """Integral floats (e.g. 5e4 bytes) are accepted where an int is meant."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def int_list_str(value: IntList) -> Optional[str]:
    """[8, 8, 1] -> '8,8,1'; strings and None unchanged."""
    if value is None or isinstance(value, str) or _is_placeholder(value):
        return value
    return ",".join(str(int(v)) for v in value)


def str_list_str(value: StrList) -> Optional[str]:
    """['conv1', 'dense1'] -> 'conv1,dense1'; strings and None unchanged."""
    if value is None or isinstance(value, str) or _is_placeholder(value):
        return value
    return ",".join(str(v) for v in value)


def m_by_n_str(value: Optional[Union[str, Sequence[int]]]) -> Optional[str]:
    """(2, 4) -> '2:4'; strings and None unchanged."""
    if value is None or isinstance(value, str) or _is_placeholder(value):
        return value
    return ":".join(str(int(v)) for v in value)


def enum_value(value: Any) -> Any:
    """An Enum member -> its value (the parameters are stored as plain strings)."""
    return getattr(value, "value", value)


def validate(props: Mapping[str, Any], *checks: Callable[[Mapping[str, Any]], Any]) -> None:
    """Runs the params.* checks when the pipeline is built (skipped for runtime parameters)."""
    if not params.is_static(props):
        return
    for check in checks:
        check(props)


def _is_placeholder(value: Any) -> bool:
    """A value only known when the pipeline runs (RuntimeParameter or a TFX placeholder)."""
    return isinstance(value, (data_types.RuntimeParameter, placeholder_base.Placeholder))
