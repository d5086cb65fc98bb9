"""Evaluator: accuracy of a `.tflite` on the eval split, thresholds, and a Pusher-ready blessing."""
from __future__ import annotations

import json
from typing import Mapping, Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from collabopt.components import keys, params, spec_utils
from collabopt.components import types as artifact_types
from collabopt.components.core.errors import ConfigError
from collabopt.components.evaluator import executor
from collabopt.components.evaluator.executor import thresholds_from

DEFAULT_ID = "TFLiteEvaluator"


class EvaluatorSpec(ComponentSpec):
    """ComponentSpec of our (TFLite) Evaluator."""

    PARAMETERS = {
        keys.MIN_ACCURACY_KEY: ExecutionParameter(type=float, optional=True),
        keys.MAX_ACCURACY_DROP_KEY: ExecutionParameter(type=float, optional=True),
        keys.MAX_TFLITE_BYTES_KEY: ExecutionParameter(type=int, optional=True),
        keys.MAX_INFERENCE_MS_KEY: ExecutionParameter(type=float, optional=True),
        keys.MAX_SRAM_BYTES_KEY: ExecutionParameter(type=int, optional=True),
        keys.MAX_ARENA_BYTES_KEY: ExecutionParameter(type=int, optional=True),
        keys.TARGETS_KEY: ExecutionParameter(type=str, optional=True),
        **spec_utils.DATA_PARAMETERS,
    }
    INPUTS = {
        keys.TFLITE_MODEL_KEY: ChannelParameter(type=artifact_types.TFLiteModel),
        keys.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        keys.BASELINE_EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation,
                                                       optional=True),
        keys.VELA_MODEL_KEY: ChannelParameter(type=artifact_types.VelaModel, optional=True),
    }
    OUTPUTS = {
        keys.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
        keys.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


def spec_for(extra_targets: int) -> type[EvaluatorSpec]:
    """An EvaluatorSpec with one more optional VelaModel input per further target
    (`vela_model_1`, ...): KFP v2 compiles only single channels, so each is a named input."""
    if not extra_targets:
        return EvaluatorSpec
    return type("EvaluatorSpec", (EvaluatorSpec,), {"INPUTS": {
        **EvaluatorSpec.INPUTS,
        **{keys.extra_vela_model_key(i): ChannelParameter(type=artifact_types.VelaModel,
                                                          optional=True)
           for i in range(1, extra_targets + 1)}}})


class Evaluator(base_component.BaseComponent):
    """Measures a `.tflite` on the eval split and blesses it when it meets the thresholds.

    Example
    ```python
    baseline = Evaluator(tflite_model=ptq.outputs['tflite_model'],
                         examples=example_gen.outputs['examples']).with_id('baseline_eval')
    evaluator = Evaluator(
        tflite_model=converter.outputs['tflite_model'],
        examples=example_gen.outputs['examples'],
        baseline_evaluation=baseline.outputs['evaluation'],
        vela_models={'ethos-u55-128': vela_u55.outputs['vela_model'],   # first: primary
                     'ethos-u65-256': vela_u65.outputs['vela_model']},
        max_accuracy_drop=0.02,
        max_inference_ms=5.0,
    )
    pusher = Pusher(model=..., model_blessing=evaluator.outputs['blessing'], ...)
    ```

    Its default id is `TFLiteEvaluator` (not `Evaluator`), so it can sit next to
    `tfx.components.Evaluator` in one pipeline; use `.with_id()` for more than one.

    Thresholds (each optional; none set blesses every model): `min_accuracy`,
    `max_accuracy_drop` (against `baseline_evaluation`; an Evaluator without one evaluates the
    baseline itself, to which the drop does not apply, so one set of thresholds serves every
    leaf), `max_tflite_bytes`, `max_arena_bytes` (TFLM's tensor arena, measured by the
    TFLiteConverter), `max_inference_ms` and `max_sram_bytes` (both need a Vela model, read from
    its properties). With several targets (`vela_models`) the thresholds are judged per target;
    the blessing is the first (primary) target's.

    Component `outputs` contains:
     - `evaluation`: a standard `ModelEvaluation` (`metrics.json`) with custom properties
       `int8_accuracy` (accuracy of the `.tflite`, whatever its quantization), `num_examples`,
       `baseline_accuracy` and `accuracy_drop` (with a baseline), `technique_path`,
       `quantization`, `tflite_bytes`, `tflite_uri`, and with a Vela model `inference_ms`,
       `sram_bytes`, `flash_bytes`, `target`, `vela_uri` (the primary target's); `arena_bytes`
       and `tflm_unsupported_ops`; `per_target` (JSON: each target's Vela figures, `blessed` and
       `reasons`, primary first); `blessed` and `reasons` (primary target). The leaf's figures
       are all here, so a selector or report reads one artifact.
     - `blessing`: a standard `ModelBlessing` as TFX's Evaluator writes it — int custom property
       `blessed` (1 / 0) and a `BLESSED` or `NOT_BLESSED` file — plus `reasons` (JSON list of
       the failed thresholds with the measured values), `technique_path`, `current_model` and
       `current_model_id`. A standard Pusher accepts it unchanged.
    """

    SPEC_CLASS = EvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self,
                 tflite_model: types.BaseChannel,
                 examples: types.BaseChannel,
                 baseline_evaluation: Optional[types.BaseChannel] = None,
                 vela_model: Optional[types.BaseChannel] = None,
                 vela_models: Optional[Mapping[str, types.BaseChannel]] = None,
                 min_accuracy: Optional[float] = None,
                 max_accuracy_drop: Optional[float] = None,
                 max_tflite_bytes: Optional[int] = None,
                 max_inference_ms: Optional[float] = None,
                 max_sram_bytes: Optional[int] = None,
                 max_arena_bytes: Optional[int] = None,
                 batch_size: int = params.DEFAULT_BATCH_SIZE,
                 feature_key: str = params.DEFAULT_FEATURE_KEY,
                 label_key: str = params.DEFAULT_LABEL_KEY,
                 feature_shape: spec_utils.IntList = None,
                 feature_dtype: str = params.DEFAULT_FEATURE_DTYPE,
                 feature_scale: float = 1.0):
        """Constructs an Evaluator (default id `TFLiteEvaluator`).

        Args:
          tflite_model: Channel of a `TFLiteModel` to evaluate.
          examples: Channel of `Examples`; its `eval` split is the test set.
          baseline_evaluation: Optional channel of the baseline leaf's `ModelEvaluation` (an
            Evaluator's output); gives `baseline_accuracy` and `accuracy_drop`.
          vela_model: Optional channel of the `VelaModel` compiled from `tflite_model`; gives
            `inference_ms` and `sram_bytes`.
          vela_models: Instead of `vela_model`, several targets: target name -> the channel of
            its `VelaModel`, primary target first. Each target's figures and verdict are
            recorded (`per_target`); the blessing and the flat figures are the primary's.
          min_accuracy: Bless only at this accuracy or above, in [0, 1].
          max_accuracy_drop: Bless only if baseline accuracy - accuracy is at most this, in
            [0, 1]; not applied without `baseline_evaluation` (this is then the baseline).
          max_tflite_bytes: Bless only if the `.tflite` is at most this many bytes.
          max_inference_ms: Bless only if Vela's inference time is at most this; needs
            `vela_model`.
          max_sram_bytes: Bless only if Vela's SRAM use is at most this; needs `vela_model`.
          max_arena_bytes: Bless only if TFLM's tensor arena is at most this many bytes.
          batch_size: Batch size of evaluation.
          feature_key: tf.Example feature holding the model input.
          label_key: tf.Example feature holding the integer class label.
          feature_shape: Input shape without batch (`'8,8,1'` or a list); None takes it from
            the `.tflite`.
          feature_dtype: `float32` or `int64`, as stored in the examples.
          feature_scale: Factor applied to the features (e.g. 1/255 for raw pixels).

        Raises:
          ConfigError: a threshold is out of range, or max_inference_ms / max_sram_bytes is
            set without `vela_model`.
        """
        props = {
            keys.MIN_ACCURACY_KEY: spec_utils.as_float(keys.MIN_ACCURACY_KEY, min_accuracy),
            keys.MAX_ACCURACY_DROP_KEY: spec_utils.as_float(keys.MAX_ACCURACY_DROP_KEY,
                                                            max_accuracy_drop),
            keys.MAX_TFLITE_BYTES_KEY: spec_utils.as_int(keys.MAX_TFLITE_BYTES_KEY,
                                                         max_tflite_bytes),
            keys.MAX_INFERENCE_MS_KEY: spec_utils.as_float(keys.MAX_INFERENCE_MS_KEY,
                                                           max_inference_ms),
            keys.MAX_SRAM_BYTES_KEY: spec_utils.as_int(keys.MAX_SRAM_BYTES_KEY, max_sram_bytes),
            keys.MAX_ARENA_BYTES_KEY: spec_utils.as_int(keys.MAX_ARENA_BYTES_KEY,
                                                        max_arena_bytes),
            **spec_utils.data_props(feature_key, label_key, feature_shape, feature_dtype,
                                    feature_scale, batch_size),
        }
        spec_utils.validate(props, params.check_data_params, thresholds_from)
        if vela_model is not None and vela_models:
            raise ConfigError(f"Evaluator: give {keys.VELA_MODEL_KEY}= (one target) or "
                              "vela_models= (several), not both.")
        vela_channels = list((vela_models or {}).values())
        if vela_model is not None:
            vela_channels = [vela_model]
        if vela_models:
            props[keys.TARGETS_KEY] = json.dumps(list(vela_models))
        if params.is_static(props):
            thresholds = thresholds_from(props)
            if thresholds.needs_vela and not vela_channels:
                raise ConfigError(
                    f"{keys.MAX_INFERENCE_MS_KEY} / {keys.MAX_SRAM_BYTES_KEY} need Vela's "
                    f"numbers: pass {keys.VELA_MODEL_KEY}= the VelaCompiler output of this "
                    ".tflite, or drop those thresholds.")
        extra = {keys.extra_vela_model_key(i): channel
                 for i, channel in enumerate(vela_channels[1:], start=1)}
        spec = spec_for(len(extra))(
            tflite_model=tflite_model,
            examples=examples,
            baseline_evaluation=baseline_evaluation,
            vela_model=vela_channels[0] if vela_channels else None,
            **extra,
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            **props)
        super().__init__(spec=spec)
        self.with_id(DEFAULT_ID)

