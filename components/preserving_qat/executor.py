"""PreservingQAT executor: read the model and examples, call core.qat, write the QAT Model."""
from __future__ import annotations

from typing import Any, Dict, List

from absl import logging
from tfx import types as tfx_types
from tfx.dsl.components.base import base_executor

from components import artifact_io, keys, params, types


class Executor(base_executor.BaseExecutor):
    """Runs (P)(C)QAT (core.qat), checks the preserved structure, records the measurements."""

    def Do(self, input_dict: Dict[str, List[tfx_types.Artifact]],
           output_dict: Dict[str, List[tfx_types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        from components.core import metrics, preservation, qat, training

        self._log_startup(input_dict, output_dict, exec_properties)
        model_artifact = artifact_io.single(input_dict, keys.MODEL_KEY)
        output = artifact_io.single(output_dict, keys.OPTIMIZED_MODEL_KEY)
        training_params = params.training_params(exec_properties)

        model = artifact_io.load_model(model_artifact)
        mode = qat.resolve_mode(model, params.qat_mode(exec_properties))
        qat.check_quantizable(model, mode)
        train_ds, eval_ds = artifact_io.train_and_eval(
            input_dict[keys.EXAMPLES_KEY], exec_properties, artifact_io.model_input_shape(model))
        before = metrics.keras_weight_structure(model)
        logging.info("QAT mode %s", mode.value)

        # core.qat verifies the preserved structure itself; the same promise is checked again
        # here on core.metrics' measurements, which are what the artifact properties report.
        qat_model = qat.quantize_aware_train(model, train_ds, mode, training_params)
        after = metrics.keras_weight_structure(qat_model)
        step = f"PreservingQAT({mode.value})"
        if mode.preserves_sparsity:
            preservation.check_sparsity_kept(before, after, step=step)
        if mode.preserves_clusters:
            preservation.check_clusters_kept(before, after, step=step)
        if mode == qat.QATMode.QAT and (preservation.is_pruned(before)
                                        or preservation.is_clustered(before)):
            logging.warning("%s: mode 'qat' does not preserve the input's sparsity / clusters; "
                            "use 'pqat', 'cqat', 'pcqat' or 'auto' to keep them.", step)
        accuracy = training.keras_accuracy(qat_model, eval_ds)
        logging.info("QAT model: sparsity %.3f, accuracy %.4f", after.sparsity, accuracy)

        artifact_io.save_model(qat_model, output)
        artifact_io.set_properties(output, {
            types.TECHNIQUE_PATH: artifact_io.technique_path(model_artifact, mode.value),
            types.QAT_MODE: mode.value,
            types.PARAMETERS: params.parameters_json(exec_properties),
            **artifact_io.structure_properties(after),
            types.KERAS_ACCURACY: float(accuracy),
        })
