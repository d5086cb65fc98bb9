"""Selector: picks the leaf that meets the thresholds and blesses it for a standard TFX Pusher."""
from __future__ import annotations

import json
from typing import Mapping, Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from collabopt.components.core.leaves import LEAVES, leaf_key
from collabopt.components.core.selection import Objective, check_thresholds
from collabopt.components import keys
from collabopt.components.selector import executor


class SelectorSpec(types.ComponentSpec):
    """One optional ModelEvaluation input per leaf of the deployment tree, keyed by leaf.

    (KFP v2 compiles only single channels, so the leaves are named inputs rather than a union.)
    """

    PARAMETERS = {
        keys.THRESHOLDS_KEY: ExecutionParameter(type=str),
        keys.OBJECTIVE_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {
        leaf_key(path): ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True)
        for path in LEAVES
    }
    OUTPUTS = {
        keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        keys.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class Selector(base_component.BaseComponent):
    """Picks, among the evaluated leaves, the best one that meets every threshold.

    Its `model` output holds the chosen `.tflite` (and its Vela twin) in `Format-Serving/`, and its
    `blessing` is a standard ModelBlessing, so a stock TFX Pusher deploys the choice. When no leaf
    meets the thresholds the blessing is NOT_BLESSED (the Pusher pushes nothing) and the
    `explanation` property says which leaf came closest and by how much.

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
                 objective: str = Objective.LATENCY.value):
        """
        Args:
          evaluations: leaf technique path (one of collabopt.components.core.leaves.LEAVES) -> the channel of
            that leaf's ModelEvaluation from our Evaluator.
          thresholds: min_accuracy, max_accuracy_drop, max_tflite_bytes, max_inference_ms,
            max_sram_bytes (each optional).
          objective: latency | size | accuracy — what "best" means among the passing leaves.
        """
        from collabopt.components.core.errors import ConfigError

        unknown = sorted(set(evaluations) - set(LEAVES))
        if unknown:
            raise ConfigError(f"Selector: unknown leaf {unknown[0]!r}; allowed: {', '.join(LEAVES)}")
        try:
            objective = Objective(objective).value
        except ValueError:
            raise ConfigError(f"Selector: objective {objective!r} is not one of "
                              f"{', '.join(o.value for o in Objective)}") from None
        spec = SelectorSpec(
            thresholds=json.dumps(check_thresholds(thresholds or {}).as_dict(), sort_keys=True),
            objective=objective,
            model=types.Channel(type=standard_artifacts.Model),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            **{leaf_key(path): channel for path, channel in evaluations.items()})
        super().__init__(spec=spec)
