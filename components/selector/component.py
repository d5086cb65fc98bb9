"""Selector: picks the leaf that meets the thresholds and blesses it for a standard TFX Pusher."""
from __future__ import annotations

import json
import re
from typing import Mapping, Optional, Sequence

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from collabopt.components.core.errors import ConfigError
from collabopt.components.core.leaves import leaf_key
from collabopt.components.core.selection import (DEFAULT_OBJECTIVE_TOLERANCE, Objective,
                                                 check_thresholds)
from collabopt.components import keys
from collabopt.components.selector import executor

_LEAF_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class SelectorSpec(types.ComponentSpec):
    """One optional ModelEvaluation input per leaf, keyed by `leaf_key(path)`.

    The leaves (templates at levels) are only known from the config, so each Selector gets a
    spec class of its own with one input per leaf (`spec_for`). KFP v2 compiles only single
    channels, so the leaves are named inputs rather than a union; the executor reads each leaf's
    path from its evaluation's `technique_path`, not from the key.
    """

    PARAMETERS = {
        keys.THRESHOLDS_KEY: ExecutionParameter(type=str),
        keys.OBJECTIVE_KEY: ExecutionParameter(type=str),
        keys.OBJECTIVE_TOLERANCE_KEY: ExecutionParameter(type=float),
        keys.SEARCH_TRACE_KEY: ExecutionParameter(type=str, optional=True),
        keys.TARGETS_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS: dict = {}
    OUTPUTS = {
        keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        keys.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


def spec_for(input_keys, extra_targets: int = 0) -> type[SelectorSpec]:
    """A SelectorSpec subclass with one optional ModelEvaluation input per key, and one more
    ModelBlessing output per target after the first (`blessing_1`, ...)."""
    return type("SelectorSpec", (SelectorSpec,), {
        "INPUTS": {key: ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True)
                   for key in input_keys},
        "OUTPUTS": {**SelectorSpec.OUTPUTS, **{
            keys.extra_blessing_key(i): ChannelParameter(type=standard_artifacts.ModelBlessing)
            for i in range(1, extra_targets + 1)}}})


class Selector(base_component.BaseComponent):
    """Picks, among the evaluated leaves, the best one that meets every threshold.

    Its `model` output holds the chosen `.tflite` (and its Vela twin) in `Format-Serving/`, and its
    `blessing` is a standard ModelBlessing, so a stock TFX Pusher deploys the choice. When no leaf
    meets the thresholds the blessing is NOT_BLESSED (the Pusher pushes nothing) and the
    `explanation` property says which leaf came closest and by how much.

    With several Ethos-U targets (`targets`, primary first) it selects once per target, with
    that target's Vela figures: `blessing` is the primary target's (the one a Pusher consumes,
    with `model`), and `blessing_1`, `blessing_2`, ... are the others', in order. Every blessing
    carries `target`, `selected_path`, `explanation`, `ranking` and `closest_path` for its target,
    and `primary` (1 on `blessing`).

    Example:
    ```python
    selector = Selector(
        evaluations={"ptq": ptq_eval.outputs["evaluation"],
                     "prune>pqat": pqat_eval.outputs["evaluation"]},
        thresholds={"max_accuracy_drop": 0.02, "max_inference_ms": 0.5},
        objective="latency")
    pusher = tfx.components.Pusher(
        model=selector.outputs["model"], model_blessing=selector.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory="serving")))
    ```
    """

    SPEC_CLASS = SelectorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, evaluations: Mapping[str, types.BaseChannel],
                 thresholds: Optional[Mapping[str, float]] = None,
                 objective: str = Objective.LATENCY.value,
                 objective_tolerance: float = DEFAULT_OBJECTIVE_TOLERANCE,
                 search_trace: Optional[str] = None,
                 targets: Optional[Sequence[str]] = None):
        """
        Args:
          evaluations: leaf technique path (e.g. "ptq", "prune75>cluster8>pcqat") -> the channel
            of that leaf's ModelEvaluation from our Evaluator.
          thresholds: min_accuracy, max_accuracy_drop, max_tflite_bytes, max_inference_ms,
            max_sram_bytes (each optional).
          objective: latency | size | accuracy — what "best" means among the passing leaves.
          objective_tolerance: leaves within this fraction of the best objective value tie, and
            the most accurate of them wins.
          search_trace: JSON of the level search that chose these leaves (`mode: search`),
            recorded on the outputs.
          targets: the names of the Ethos-U targets the Evaluators judged (their `targets`),
            primary first: one blessing per target. None: the primary target only.
        """
        if not evaluations:
            raise ConfigError("Selector: give at least one leaf evaluation")
        input_keys = {leaf_key(path): channel for path, channel in evaluations.items()}
        bad = [k for k in input_keys if not _LEAF_KEY.match(k) or k in SelectorSpec.OUTPUTS]
        if bad:
            raise ConfigError(f"Selector: leaf {bad[0]!r} cannot name an input; use letters, "
                              "digits, '_' and '>'")
        try:
            objective = Objective(objective).value
        except ValueError:
            raise ConfigError(f"Selector: objective {objective!r} is not one of "
                              f"{', '.join(o.value for o in Objective)}") from None
        if not 0 <= float(objective_tolerance) <= 1:
            raise ConfigError(f"Selector: objective_tolerance={objective_tolerance!r} must be in "
                              "[0, 1] (a fraction, e.g. 0.02 for 2 %)")
        targets = list(targets or [])
        if len(set(targets)) != len(targets):
            raise ConfigError(f"Selector: target names must differ, got {targets}")
        extra = {keys.extra_blessing_key(i): types.Channel(type=standard_artifacts.ModelBlessing)
                 for i in range(1, len(targets))}
        spec = spec_for(input_keys, len(extra))(
            thresholds=json.dumps(check_thresholds(thresholds or {}).as_dict(), sort_keys=True),
            objective=objective,
            objective_tolerance=float(objective_tolerance),
            search_trace=search_trace,
            targets=json.dumps(targets) if targets else None,
            model=types.Channel(type=standard_artifacts.Model),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            **extra,
            **input_keys)
        super().__init__(spec=spec)
