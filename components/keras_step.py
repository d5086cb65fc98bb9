"""The executor shape shared by Pruner, SparseClusterer and PreservingQAT.

Each reads a Keras model and Examples, checks before any training that the technique supports the
model, applies it (core does the fine-tuning and verifies its own promise), checks that training
did not diverge, measures the result and writes the Model with its properties. A leaf that cannot
be built ends as a failed leaf (components/failure.py). Subclasses say only what differs.
"""
from __future__ import annotations

import abc
from typing import Any, Dict, List

from absl import logging
from tfx import types as tfx_types

from collabopt.components import artifact_io, keys, params, types
from collabopt.components.failure import LeafStepExecutor


class KerasStepExecutor(LeafStepExecutor, abc.ABC):
    LEAF_INPUT_KEYS = (keys.MODEL_KEY,)

    @abc.abstractmethod
    def step_name(self, exec_properties: Dict[str, Any]) -> str:
        """The name this step appends to the technique path (e.g. 'prune75', 'cluster8',
        'pcqat'), from the parameters alone (components.core.leaves)."""

    @abc.abstractmethod
    def prepare(self, model, exec_properties: Dict[str, Any]) -> str:
        """Checks the model before training (raising a clear error) and returns the step name
        (which may depend on the model, e.g. QAT mode `auto`)."""

    @abc.abstractmethod
    def apply(self, model, train_ds, validation_ds, training, exec_properties: Dict[str, Any],
              step: str):
        """Returns the optimized Keras model (with core's FineTuning record). `validation_ds` is
        the slice of the train split fine-tuning measures recovery on (None with fixed
        epochs); `training` is the core.training.TrainingParams to fine-tune with."""

    def extra_properties(self, step: str, exec_properties: Dict[str, Any]) -> Dict[str, Any]:
        return {}

    def leaf_path(self, input_dict, exec_properties):
        return artifact_io.technique_path(artifact_io.single(input_dict, keys.MODEL_KEY),
                                          self.step_name(exec_properties))

    def run(self, input_dict: Dict[str, List[tfx_types.Artifact]],
            output_dict: Dict[str, List[tfx_types.Artifact]],
            exec_properties: Dict[str, Any]) -> None:
        from collabopt.components.core import metrics, preservation, training

        model_artifact = artifact_io.single(input_dict, keys.MODEL_KEY)
        output = artifact_io.single(output_dict, keys.OPTIMIZED_MODEL_KEY)

        model = artifact_io.load_model(model_artifact)
        step = self.prepare(model, exec_properties)
        train_ds, validation_ds, eval_ds = artifact_io.fine_tuning_data(
            input_dict[keys.EXAMPLES_KEY], exec_properties, artifact_io.model_input_shape(model))
        optimized = self.apply(model, train_ds, validation_ds,
                               fine_tuning_params(model_artifact, exec_properties),
                               exec_properties, step)
        preservation.check_finite_weights(optimized, step=self.STEP)
        fine_tuning = training.fine_tuning_of(optimized)
        structure = metrics.keras_weight_structure(optimized)
        accuracy = training.keras_accuracy(optimized, eval_ds)
        logging.info("%s: sparsity %.3f, max %d unique values per kernel, accuracy %.4f", step,
                     structure.sparsity, structure.max_unique_per_kernel, accuracy)

        artifact_io.save_model(optimized, output)
        artifact_io.set_properties(output, {
            types.TECHNIQUE_PATH: artifact_io.technique_path(model_artifact, step),
            types.PARAMETERS: params.parameters_json(exec_properties),
            **artifact_io.structure_properties(structure),
            types.KERAS_ACCURACY: float(accuracy),
            **artifact_io.fine_tuning_properties(fine_tuning),
            **self.extra_properties(step, exec_properties),
        })


def fine_tuning_params(model_artifact: tfx_types.Artifact, exec_properties: Dict[str, Any]):
    """The step's TrainingParams. When the input model was itself fine-tuned until recovered,
    recovery aims at least at the reference it recorded (the chain's base model's accuracy on the
    same validation slice, carried down the chain), not at the input's own, lower accuracy."""
    from collabopt.components.core.training import aiming_at_least

    return aiming_at_least(params.training_params(exec_properties),
                           artifact_io.get_property(model_artifact, types.REFERENCE_ACCURACY))
