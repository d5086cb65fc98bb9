"""The typed pipeline config (one YAML file), validated before anything runs.

Structure and types are checked by pydantic (unknown keys are errors); value ranges are checked by the
core parameter classes themselves, so the rules live in one place. Every error names the key, the
bad value and what is allowed.
"""
from __future__ import annotations

import enum
import os
from typing import Any, Literal, Optional

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from collabopt.components.core.errors import ConfigError
from collabopt.components.core.leaves import BASELINE_LEAF, TEMPLATES, Leaf, expand
from collabopt.components.core.selection import (DEFAULT_OBJECTIVE_TOLERANCE, Objective,
                                                 Thresholds as _CheckedThresholds)

class Mode(str, enum.Enum):
    EXHAUSTIVE = "exhaustive"    # every leaf at every combination of levels
    PROGRESSIVE = "progressive"  # deeper technique chains only while no leaf meets the thresholds
    SEARCH = "search"            # the most compressed levels that meet the thresholds (search.py)


class Runner(str, enum.Enum):
    LOCAL = "local"
    BEAM = "beam"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)


class DataConfig(_Section):
    """Examples as TFRecord files of tf.Example under `examples`, one folder (or glob) per split."""

    examples: Optional[str] = Field(None, description="Directory holding the split folders.")
    train_pattern: str = "train/*"
    eval_pattern: str = "eval/*"
    feature_key: str = "image"
    label_key: str = "label"
    feature_shape: list[int] = [8, 8, 1]
    feature_dtype: Literal["float32", "int64"] = "float32"
    feature_scale: float = Field(1.0, gt=0)


class BaseModelConfig(_Section):
    """The model to optimize: a saved tf_keras model (`path`), or one trained by a TFX Trainer from
    `module_file` (a .py file defining run_fn) or `run_fn` (a dotted name, e.g. pkg.module.run_fn)."""

    path: Optional[str] = None
    module_file: Optional[str] = None
    run_fn: Optional[str] = None
    train_epochs: int = Field(15, ge=1)
    custom_config: dict[str, Any] = {}


class TrainingConfig(_Section):
    """Fine-tuning after each wrapping step (prune, cluster, QAT).

    By default each step fine-tunes until its accuracy on a validation slice of the train split
    (`validation_fraction` of it, never the eval split) is back within `recovery_tolerance` of
    the base model's (the chain's first model: a step does not settle for the accuracy a step
    before it lost), or its validation loss stopped improving for `patience` epochs, or for at
    most `max_epochs` epochs. `epochs: N` trains exactly N epochs on the whole train split instead.
    """

    epochs: Optional[int] = Field(None, ge=1, description="null: until recovered")
    max_epochs: int = Field(8, ge=1)
    patience: int = Field(2, ge=1)
    recovery_tolerance: float = Field(0.005, ge=0, le=1)
    validation_fraction: float = Field(0.1, gt=0, le=0.5)
    learning_rate: float = Field(3e-4, gt=0)
    batch_size: int = Field(32, ge=1)
    seed: int = Field(0, ge=0, description="Seeds every fine-tuning step: same config, same "
                                           "models")


def _levels(value, name: str) -> list:
    """A level or a list of levels -> a non-empty list without repeats (order kept)."""
    levels = value if isinstance(value, list) else [value]
    if not levels:
        raise ValueError(f"{name}: give one level or a non-empty list of levels")
    return list(dict.fromkeys(levels))


class PruningConfig(_Section):
    """`target_sparsity` is one level or a list: every level is its own branch of the tree (and
    the candidates `mode: search` chooses from)."""

    target_sparsity: float | list[float] = 0.5
    pruning_schedule: Literal["constant_sparsity", "polynomial_decay"] = "polynomial_decay"
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: Optional[int] = None
    frequency: int = 10
    sparsity_m_by_n: Optional[str] = Field(None, description='e.g. "2:4"')
    pruning_policy: Optional[Literal["prune_for_latency_on_xnnpack"]] = None
    layers: Optional[list[str]] = None

    @property
    def levels(self) -> list[float]:
        return _levels(self.target_sparsity, "pruning.target_sparsity")


class ClusteringConfig(_Section):
    """`number_of_clusters` is one level or a list, as pruning's `target_sparsity`."""

    number_of_clusters: int | list[int] = 16
    cluster_centroids_init: Literal[
        "kmeans_plus_plus", "linear", "random", "density_based"] = "kmeans_plus_plus"
    cluster_per_channel: bool = False
    layers: Optional[list[str]] = None

    @property
    def levels(self) -> list[int]:
        return _levels(self.number_of_clusters, "clustering.number_of_clusters")


class ConversionConfig(_Section):
    int8_io: bool = True
    num_calibration_samples: int = Field(200, ge=1)


class TargetConfig(_Section):
    """One Ethos-U target, in Vela's words."""

    accelerator_config: str = "ethos-u55-128"
    system_config: Optional[str] = None
    memory_mode: Optional[str] = None
    optimise: Literal["Performance", "Size"] = "Performance"


class Thresholds(_Section):
    """What a leaf must meet to be deployable; each is optional. Latency and SRAM are judged per
    target in `targets` (each target gets its own selected leaf; the first target's is pushed);
    `max_arena_bytes` is TensorFlow Lite for Microcontrollers' tensor arena."""

    min_accuracy: Optional[float] = None
    max_accuracy_drop: Optional[float] = None
    max_tflite_bytes: Optional[int] = None
    max_inference_ms: Optional[float] = None
    max_sram_bytes: Optional[int] = None
    max_arena_bytes: Optional[int] = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class PipelineConfig(_Section):
    pipeline_name: str = Field("collabopt", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    pipeline_root: str = "pipeline_root"
    metadata: str = Field("metadata.sqlite", description="SQLite path, or mysql://user:pw@host:port/db")
    serving_dir: str = "serving"
    data: DataConfig = DataConfig()
    base_model: BaseModelConfig = BaseModelConfig()
    leaves: list[str] = list(TEMPLATES)
    training: TrainingConfig = TrainingConfig()
    pruning: PruningConfig = PruningConfig()
    clustering: ClusteringConfig = ClusteringConfig()
    conversion: ConversionConfig = ConversionConfig()
    targets: list[TargetConfig] = Field(default_factory=lambda: [TargetConfig()], min_length=1)
    thresholds: Thresholds = Thresholds()
    objective: Objective = Objective.LATENCY
    objective_tolerance: float = Field(
        DEFAULT_OBJECTIVE_TOLERANCE, ge=0, le=1,
        description="Leaves within this fraction of the best objective value tie; the most "
                    "accurate of them wins.")
    mode: Mode = Mode.EXHAUSTIVE
    runner: Runner = Runner.LOCAL
    beam_pipeline_args: list[str] = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    enable_cache: bool = True

    @pydantic.field_validator("leaves")
    @classmethod
    def _known_leaves(cls, leaves: list[str]) -> list[str]:
        unknown = [leaf for leaf in leaves if leaf not in TEMPLATES]
        if unknown:
            raise ValueError(f"unknown leaf {unknown[0]!r}; allowed: {', '.join(TEMPLATES)} "
                             "(levels go in pruning.target_sparsity and "
                             "clustering.number_of_clusters)")
        if not leaves:
            raise ValueError(f"at least one leaf is needed; allowed: {', '.join(TEMPLATES)}")
        # The baseline is always built: every other leaf's accuracy drop is measured against it.
        return [leaf for leaf in TEMPLATES if leaf in leaves or leaf == BASELINE_LEAF]

    @pydantic.model_validator(mode="after")
    def _check(self) -> "PipelineConfig":
        sources = [k for k in ("path", "module_file", "run_fn") if getattr(self.base_model, k)]
        if len(sources) != 1:
            raise ValueError(
                "base_model: set exactly one of `path` (a saved tf_keras model), `module_file` "
                "(a Trainer module file defining run_fn) or `run_fn` (a dotted name); "
                f"got {sources or 'none'}")
        if not self.data.examples:
            raise ValueError("data.examples: the directory of TFRecord splits is required")
        self.pruning.levels, self.clustering.levels  # noqa: B018 (non-empty lists)
        return self

    def target_names(self) -> list[str]:
        """The targets' names (core.vela.target_names), primary first."""
        from collabopt.components import params
        from collabopt.components.core.vela import target_names

        return target_names([params.vela_options(t.model_dump()) for t in self.targets])

    def all_leaves(self) -> list[Leaf]:
        """Every leaf of the tree: each template at every combination of its levels."""
        from collabopt.components import params

        m_by_n = params.parse_m_by_n(self.pruning.sparsity_m_by_n)
        return expand(self.leaves, self.pruning.levels, self.clustering.levels, m_by_n)

    def validate_parameters(self) -> None:
        """Checks value ranges with the same functions the components use when they are built."""
        from collabopt.components import params

        data = {"feature_key": self.data.feature_key, "label_key": self.data.label_key,
                "feature_shape": self.data.feature_shape, "feature_dtype": self.data.feature_dtype,
                "feature_scale": self.data.feature_scale, "batch_size": self.training.batch_size}
        _in_section("data", lambda: params.check_data_params(data))
        _in_section("thresholds", lambda: _CheckedThresholds(**self.thresholds.as_dict()))
        _in_section("training", lambda: params.training_params(self.training.model_dump()))
        for level in self.pruning.levels:
            _in_section("pruning", lambda s=level: params.pruning_params(
                {**self.pruning.model_dump(), "target_sparsity": s}))
        for level in self.clustering.levels:
            _in_section("clustering", lambda n=level: params.clustering_params(
                {**self.clustering.model_dump(), "number_of_clusters": n}))
        for i, target in enumerate(self.targets):
            _in_section(f"targets[{i}]", lambda t=target: params.vela_options(t.model_dump()))


def _in_section(section: str, build) -> None:
    try:
        build()
    except ConfigError as exc:
        raise ConfigError(f"{section}: {exc}") from exc


def _format_validation_error(exc: pydantic.ValidationError, source: str) -> str:
    lines = [f"{source} is not a valid collabopt config:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see `collabopt demo` for a complete config)"
        value = err.get("input")
        shown = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(value, dict) \
            else f" (got {value!r})"
        lines.append(f"  {key}: {msg}{shown}")
    if len(lines) == 2:  # one problem: one line
        return f"{source}: {lines[1].strip()}"
    return "\n".join(lines)


def _resolve_paths(config: PipelineConfig, base_dir: str) -> PipelineConfig:
    """Makes local paths relative to the config file absolute; leaves URIs (gs://, s3://) alone."""

    def resolve(path: Optional[str]) -> Optional[str]:
        if not path or "://" in path or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(base_dir, path))

    update = {
        "pipeline_root": resolve(config.pipeline_root),
        "serving_dir": resolve(config.serving_dir),
        "metadata": config.metadata if config.metadata.startswith(("mysql://", "grpc://"))
        else resolve(config.metadata),
        "data": config.data.model_copy(update={"examples": resolve(config.data.examples)}),
        "base_model": config.base_model.model_copy(update={
            "path": resolve(config.base_model.path),
            "module_file": resolve(config.base_model.module_file)}),
    }
    return config.model_copy(update=update)


def parse_config(raw: dict[str, Any], base_dir: str = ".", source: str = "config") -> PipelineConfig:
    """Validates a config mapping; raises ConfigError listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a YAML mapping of keys, got {type(raw).__name__}")
    try:
        config = PipelineConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    config.validate_parameters()
    return _resolve_paths(config, base_dir)


def load_config(path: str) -> PipelineConfig:
    """Reads and validates a pipeline.yaml; paths inside are relative to the file."""
    if not os.path.exists(path):
        raise ConfigError(f"Config file {path!r} does not exist. `collabopt demo` writes one to start "
                          "from (demo-run/pipeline.yaml).")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse_config(raw, base_dir=os.path.dirname(os.path.abspath(path)), source=path)


def dump_config(config: PipelineConfig, path: str) -> None:
    data = config.model_dump(mode="json")
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)


def check_local_inputs(config: PipelineConfig) -> None:
    """Before a local run: the Examples splits and the base model the config names exist.

    Remote URIs (gs://, s3://) are left to the steps; a local typo fails here, before any work,
    rather than minutes into the run.
    """
    import glob

    data = config.data
    if "://" not in data.examples:
        if not os.path.isdir(data.examples):
            raise ConfigError(f"data.examples: {data.examples!r} is not a directory. Point it at "
                              "the folder that holds your train/ and eval/ TFRecord files.")
        for key, pattern in (("train_pattern", data.train_pattern),
                             ("eval_pattern", data.eval_pattern)):
            if not glob.glob(os.path.join(data.examples, pattern)):
                raise ConfigError(
                    f"data.{key}: no file matches {pattern!r} under {data.examples!r}. An empty "
                    f"split cannot train or evaluate a model: fix the pattern or add the files.")
    base = config.base_model
    if base.path and "://" not in base.path:
        markers = ("saved_model.pb", os.path.join("Format-Serving", "saved_model.pb"))
        if not os.path.exists(base.path):
            raise ConfigError(f"base_model.path: {base.path!r} does not exist. Save your model "
                              "with tf_keras `model.save(path)` and point base_model.path at it.")
        if os.path.isdir(base.path) and not any(
                os.path.exists(os.path.join(base.path, m)) for m in markers):
            raise ConfigError(f"base_model.path: {base.path!r} holds no SavedModel "
                              "(saved_model.pb). Save the model with tf_keras `model.save(path)`.")
    if base.module_file and "://" not in base.module_file and not os.path.isfile(base.module_file):
        raise ConfigError(f"base_model.module_file: {base.module_file!r} does not exist.")
