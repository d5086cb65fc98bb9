"""Pruner executor: read the model and examples, call core.pruning, write the pruned Model."""
from __future__ import annotations

from typing import Any, Dict, List

from absl import logging
from tfx import types as tfx_types
from tfx.dsl.components.base import base_executor

from components import artifact_io, keys, params, types

TECHNIQUE = "prune"


class Executor(base_executor.BaseExecutor):
    """Prunes with TFMOT (core.pruning, which checks the target sparsity), records measurements."""

    def Do(self, input_dict: Dict[str, List[tfx_types.Artifact]],
           output_dict: Dict[str, List[tfx_types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        from components.core import metrics, pruning, training

        self._log_startup(input_dict, output_dict, exec_properties)
        model_artifact = artifact_io.single(input_dict, keys.MODEL_KEY)
        output = artifact_io.single(output_dict, keys.OPTIMIZED_MODEL_KEY)
        pruning_params = params.pruning_params(exec_properties)
        training_params = params.training_params(exec_properties)

        model = artifact_io.load_model(model_artifact)
        pruning.check_prunable(model, pruning_params)
        train_ds, eval_ds = artifact_io.train_and_eval(
            input_dict[keys.EXAMPLES_KEY], exec_properties, artifact_io.model_input_shape(model))

        # core.pruning.prune raises StructureLostError when a pruned kernel missed the target.
        pruned = pruning.prune(model, train_ds, pruning_params, training_params)
        structure = metrics.keras_weight_structure(pruned)
        accuracy = training.keras_accuracy(pruned, eval_ds)
        logging.info("Pruned model: sparsity %.3f, accuracy %.4f", structure.sparsity, accuracy)

        artifact_io.save_model(pruned, output)
        artifact_io.set_properties(output, {
            types.TECHNIQUE_PATH: artifact_io.technique_path(model_artifact, TECHNIQUE),
            types.PARAMETERS: params.parameters_json(exec_properties),
            **artifact_io.structure_properties(structure),
            types.KERAS_ACCURACY: float(accuracy),
        })
