"""Component parameters -> validated core parameter records. Pure: never imports TFX.

The six components take primitive parameters (str / int / float / bool) because TFX stores them
as execution properties in ML Metadata. This module turns such a mapping (keyed by the constants
of `collabopt.components.keys`) into the typed records of `collabopt.components.core` — the same function runs in a
component's `__init__` (so a bad value fails when the pipeline is built) and in its executor.

List-like parameters are strings: `layers="conv1,dense1"` or `layers='["conv1", "dense1"]'`,
`feature_shape="8,8,1"` or `"[8, 8, 1]"`, `sparsity_m_by_n="2:4"`.
"""
from __future__ import annotations

import enum
import json
from typing import Any, Callable, Iterable, Mapping, TypeVar

from collabopt.components import keys
from collabopt.components.core.errors import ConfigError

E = TypeVar("E", bound=enum.Enum)

# Defaults shared by the components' signatures and the executors.
DEFAULT_FEATURE_KEY = "image"
DEFAULT_LABEL_KEY = "label"
DEFAULT_FEATURE_DTYPE = "float32"
DEFAULT_BATCH_SIZE = 32
# Fine-tuning: until recovered (see core.training), within these bounds.
DEFAULT_EPOCHS = None
DEFAULT_MAX_EPOCHS = 8
DEFAULT_PATIENCE = 2
DEFAULT_RECOVERY_TOLERANCE = 0.005
DEFAULT_VALIDATION_FRACTION = 0.1
DEFAULT_SEED = 0
DEFAULT_LEARNING_RATE = 3e-4

TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"


def is_static(props: Mapping[str, Any]) -> bool:
    """True when every value is a plain Python value (no RuntimeParameter / placeholder).

    Values only known when the pipeline runs cannot be validated when it is built; the executor
    validates them with the same functions.
    """
    return all(v is None or isinstance(v, (str, int, float, bool)) for v in props.values())


def parameters_json(props: Mapping[str, Any]) -> str:
    """The `parameters` artifact property: the step's non-None parameters as sorted JSON."""
    return json.dumps({k: v for k, v in sorted(props.items()) if v is not None}, sort_keys=True)


# --- small parsers ---------------------------------------------------------------------------

def parse_enum(name: str, enum_cls: type[E], value: Any) -> E:
    """`enum_cls(value)`, or a ConfigError naming the parameter and the allowed values."""
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum_cls)
        raise ConfigError(f"{name}={value!r} is not supported; use one of {allowed}.") from None


def _split_list(name: str, value: str) -> list[Any]:
    text = value.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}={value!r} is not a valid JSON list: {exc}.") from exc
        if not isinstance(items, list):
            raise ConfigError(f"{name}={value!r} must be a JSON list or comma-separated values.")
        return items
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_str_list(name: str, value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """'a,b' / '["a", "b"]' / ['a', 'b'] -> ('a', 'b'); None or '' -> None."""
    if value is None:
        return None
    items = _split_list(name, value) if isinstance(value, str) else list(value)
    if not items and isinstance(value, str) and not value.strip():
        return None
    if not items or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(
            f"{name}={value!r} must name at least one layer, as 'conv1,dense1' or a JSON list.")
    return tuple(items)


def parse_int_list(name: str, value: str | Iterable[int] | None) -> tuple[int, ...] | None:
    """'8,8,1' / '[8, 8, 1]' / [8, 8, 1] -> (8, 8, 1); None or '' -> None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    items = _split_list(name, value) if isinstance(value, str) else list(value)
    try:
        dims = tuple(int(i) for i in items)
    except (TypeError, ValueError):
        dims = ()
    if not dims or any(d <= 0 for d in dims) or any(
            isinstance(i, float) and not float(i).is_integer() for i in items):
        raise ConfigError(
            f"{name}={value!r} must be positive integers, as '8,8,1' or a JSON list [8, 8, 1].")
    return dims


def parse_m_by_n(value: str | Iterable[int] | None) -> tuple[int, int] | None:
    """'2:4' / '2,4' / '[2, 4]' -> (2, 4): TFMOT's sparsity_m_by_n (m zeros in n consecutive)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    name = keys.SPARSITY_M_BY_N_KEY
    text = value.replace(":", ",") if isinstance(value, str) else value
    try:
        pair = parse_int_list(name, text)
    except ConfigError:
        pair = None
    if pair is None or len(pair) != 2 or pair[0] >= pair[1]:
        raise ConfigError(
            f"{name}={value!r} must be 'm:n' with 0 < m < n, e.g. '2:4' (2 zeros in every 4 "
            "consecutive weights).")
    return pair  # type: ignore[return-value]


def parse_flag(name: str, value: Any) -> bool:
    """A bool parameter: True/False, or 1/0 as it arrives on Kubeflow (KFP v2 has no boolean
    parameters: TFX compiles a bool ExecutionParameter as NUMBER_INTEGER)."""
    if isinstance(value, bool):
        return value
    if _is_int(value) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"{name}={value!r} must be true or false (or 1 / 0).")


def _check(name: str, value: Any, ok: Callable[[Any], bool], allowed: str) -> None:
    if not ok(value):
        raise ConfigError(f"{name}={value!r} is out of range; it must be {allowed}.")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --- records ---------------------------------------------------------------------------------

def feature_spec(props: Mapping[str, Any], model_input_shape: Iterable[int] | None = None):
    """A core.data.FeatureSpec; feature_shape None -> the model's input shape (without batch).

    Raises ConfigError when neither is known.
    """
    from collabopt.components.core.data import FeatureSpec

    shape = parse_int_list(keys.FEATURE_SHAPE_KEY, props.get(keys.FEATURE_SHAPE_KEY))
    if shape is None and model_input_shape is not None:
        dims = list(model_input_shape)
        if not dims or any(d is None for d in dims):
            raise ConfigError(
                f"The model's input shape {dims} is not fully known; set {keys.FEATURE_SHAPE_KEY} "
                "(e.g. '8,8,1').")
        shape = tuple(int(d) for d in dims)
    if shape is None:
        raise ConfigError(
            f"{keys.FEATURE_SHAPE_KEY} is not set and the model does not tell its input shape; "
            f"set {keys.FEATURE_SHAPE_KEY} (e.g. '8,8,1').")
    scale = props.get(keys.FEATURE_SCALE_KEY)
    if scale is None:
        scale = 1.0
    _check(keys.FEATURE_SCALE_KEY, scale, lambda v: _is_number(v) and v > 0, "a number > 0")
    batch_size = props.get(keys.BATCH_SIZE_KEY, DEFAULT_BATCH_SIZE)
    _check(keys.BATCH_SIZE_KEY, batch_size, lambda v: _is_int(v) and v > 0, "an integer > 0")
    return FeatureSpec(
        feature_key=props.get(keys.FEATURE_KEY_KEY) or DEFAULT_FEATURE_KEY,
        label_key=props.get(keys.LABEL_KEY_KEY) or DEFAULT_LABEL_KEY,
        feature_shape=shape,
        feature_dtype=props.get(keys.FEATURE_DTYPE_KEY) or DEFAULT_FEATURE_DTYPE,
        scale=float(scale),
    )


def check_data_params(props: Mapping[str, Any]) -> None:
    """Validates the data parameters when the pipeline is built (the model is not known yet)."""
    feature_spec(props, model_input_shape=(1,))


def batch_size(props: Mapping[str, Any]) -> int:
    value = props.get(keys.BATCH_SIZE_KEY)
    return DEFAULT_BATCH_SIZE if value is None else int(value)


def training_params(props: Mapping[str, Any]):
    """A core.training.TrainingParams from epochs (None: until recovered), max_epochs, patience,
    recovery_tolerance, validation_fraction, learning_rate and seed; unset keys take the
    defaults."""
    from collabopt.components.core.training import TrainingParams

    def get(key, default):
        value = props.get(key)
        return default if value is None else value

    epochs = props.get(keys.EPOCHS_KEY)
    values = {
        keys.MAX_EPOCHS_KEY: get(keys.MAX_EPOCHS_KEY, DEFAULT_MAX_EPOCHS),
        keys.PATIENCE_KEY: get(keys.PATIENCE_KEY, DEFAULT_PATIENCE),
        keys.RECOVERY_TOLERANCE_KEY: get(keys.RECOVERY_TOLERANCE_KEY, DEFAULT_RECOVERY_TOLERANCE),
        keys.VALIDATION_FRACTION_KEY: get(keys.VALIDATION_FRACTION_KEY,
                                          DEFAULT_VALIDATION_FRACTION),
        keys.LEARNING_RATE_KEY: get(keys.LEARNING_RATE_KEY, DEFAULT_LEARNING_RATE),
    }
    if epochs is not None:
        _check(keys.EPOCHS_KEY, epochs, lambda v: _is_int(v) and v >= 1,
               "null (until recovered) or an integer >= 1")
    for key in (keys.MAX_EPOCHS_KEY, keys.PATIENCE_KEY):
        _check(key, values[key], lambda v: _is_int(v) and v >= 1, "an integer >= 1")
    _check(keys.RECOVERY_TOLERANCE_KEY, values[keys.RECOVERY_TOLERANCE_KEY],
           lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]")
    _check(keys.VALIDATION_FRACTION_KEY, values[keys.VALIDATION_FRACTION_KEY],
           lambda v: _is_number(v) and 0 < v <= 0.5, "a number in (0, 0.5]")
    _check(keys.LEARNING_RATE_KEY, values[keys.LEARNING_RATE_KEY],
           lambda v: _is_number(v) and v > 0, "a number > 0")
    seed = get(keys.SEED_KEY, DEFAULT_SEED)
    _check(keys.SEED_KEY, seed, lambda v: _is_int(v) and v >= 0, "an integer >= 0")
    return TrainingParams(epochs=epochs, seed=seed, **values)


def pruning_params(props: Mapping[str, Any]):
    """A core.pruning.PruningParams (validated by its __post_init__)."""
    from collabopt.components.core.pruning import PruningParams, PruningSchedule

    kwargs: dict[str, Any] = {}
    for key in (keys.TARGET_SPARSITY_KEY, keys.INITIAL_SPARSITY_KEY, keys.BEGIN_STEP_KEY,
                keys.END_STEP_KEY, keys.FREQUENCY_KEY, keys.PRUNING_POLICY_KEY):
        if props.get(key) is not None:
            kwargs[key] = props[key]
    if props.get(keys.PRUNING_SCHEDULE_KEY) is not None:
        kwargs[keys.PRUNING_SCHEDULE_KEY] = parse_enum(
            keys.PRUNING_SCHEDULE_KEY, PruningSchedule, props[keys.PRUNING_SCHEDULE_KEY])
    m_by_n = parse_m_by_n(props.get(keys.SPARSITY_M_BY_N_KEY))
    if m_by_n is not None:
        kwargs[keys.SPARSITY_M_BY_N_KEY] = m_by_n
    layers = parse_str_list(keys.LAYERS_KEY, props.get(keys.LAYERS_KEY))
    if layers is not None:
        kwargs[keys.LAYERS_KEY] = layers
    return PruningParams(**kwargs)


def clustering_params(props: Mapping[str, Any]):
    """A core.clustering.ClusteringParams (validated by its __post_init__)."""
    from collabopt.components.core.clustering import CentroidInitialization, ClusteringParams

    kwargs: dict[str, Any] = {}
    if props.get(keys.NUMBER_OF_CLUSTERS_KEY) is not None:
        kwargs[keys.NUMBER_OF_CLUSTERS_KEY] = props[keys.NUMBER_OF_CLUSTERS_KEY]
    for key in (keys.PRESERVE_SPARSITY_KEY, keys.CLUSTER_PER_CHANNEL_KEY):
        if props.get(key) is not None:
            kwargs[key] = parse_flag(key, props[key])
    if props.get(keys.CLUSTER_CENTROIDS_INIT_KEY) is not None:
        kwargs[keys.CLUSTER_CENTROIDS_INIT_KEY] = parse_enum(
            keys.CLUSTER_CENTROIDS_INIT_KEY, CentroidInitialization,
            props[keys.CLUSTER_CENTROIDS_INIT_KEY])
    layers = parse_str_list(keys.LAYERS_KEY, props.get(keys.LAYERS_KEY))
    if layers is not None:
        kwargs[keys.LAYERS_KEY] = layers
    return ClusteringParams(**kwargs)


def qat_mode(props: Mapping[str, Any]):
    """A core.qat.QATMode from `mode`."""
    from collabopt.components.core.qat import QATMode

    return parse_enum(keys.MODE_KEY, QATMode, props.get(keys.MODE_KEY) or "auto")


def quantization_mode(props: Mapping[str, Any]):
    """A core.tflite.QuantizationMode from `quantization`."""
    from collabopt.components.core.tflite import QuantizationMode

    return parse_enum(keys.QUANTIZATION_KEY, QuantizationMode,
                      props.get(keys.QUANTIZATION_KEY) or "int8")


def num_calibration_samples(props: Mapping[str, Any]) -> int:
    value = props.get(keys.NUM_CALIBRATION_SAMPLES_KEY, 200)
    _check(keys.NUM_CALIBRATION_SAMPLES_KEY, value, lambda v: _is_int(v) and v >= 1,
           "an integer >= 1")
    return int(value)


def vela_options(props: Mapping[str, Any]):
    """A core.vela.VelaOptions (validated by its __post_init__)."""
    from collabopt.components.core.vela import Optimise, VelaOptions

    kwargs: dict[str, Any] = {}
    for key in (keys.ACCELERATOR_CONFIG_KEY, keys.SYSTEM_CONFIG_KEY, keys.MEMORY_MODE_KEY):
        if props.get(key) is not None:
            kwargs[key] = props[key]
    if props.get(keys.OPTIMISE_KEY) is not None:
        kwargs[keys.OPTIMISE_KEY] = parse_enum(keys.OPTIMISE_KEY, Optimise,
                                               props[keys.OPTIMISE_KEY])
    files = parse_str_list(keys.CONFIG_FILES_KEY, props.get(keys.CONFIG_FILES_KEY))
    if files is not None:
        kwargs[keys.CONFIG_FILES_KEY] = files
    return VelaOptions(**kwargs)


__all__ = [
    "is_static", "parameters_json", "parse_enum", "parse_str_list", "parse_int_list",
    "parse_m_by_n", "feature_spec", "check_data_params", "batch_size", "training_params",
    "pruning_params", "clustering_params", "qat_mode", "quantization_mode",
    "num_calibration_samples", "vela_options", "TRAIN_SPLIT", "EVAL_SPLIT",
]
