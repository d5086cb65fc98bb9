"""SparseClusterer executor: read the model and examples, call core.clustering, write the Model."""
from __future__ import annotations

from typing import Any, Dict, List

from absl import logging
from tfx import types as tfx_types
from tfx.dsl.components.base import base_executor

from components import artifact_io, keys, params, types

TECHNIQUE = "cluster"


class Executor(base_executor.BaseExecutor):
    """Clusters with TFMOT (core.clustering, which checks clusters and kept zeros), records them."""

    def Do(self, input_dict: Dict[str, List[tfx_types.Artifact]],
           output_dict: Dict[str, List[tfx_types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        from components.core import clustering, metrics, training

        self._log_startup(input_dict, output_dict, exec_properties)
        model_artifact = artifact_io.single(input_dict, keys.MODEL_KEY)
        output = artifact_io.single(output_dict, keys.OPTIMIZED_MODEL_KEY)
        clustering_params = params.clustering_params(exec_properties)
        training_params = params.training_params(exec_properties)

        model = artifact_io.load_model(model_artifact)
        clustering.check_clusterable(model, clustering_params)
        train_ds, eval_ds = artifact_io.train_and_eval(
            input_dict[keys.EXAMPLES_KEY], exec_properties, artifact_io.model_input_shape(model))

        # core.clustering.cluster raises StructureLostError when a clustered kernel holds more
        # than number_of_clusters values or preserve_sparsity lost zeros.
        clustered = clustering.cluster(model, train_ds, clustering_params, training_params)
        structure = metrics.keras_weight_structure(clustered)
        accuracy = training.keras_accuracy(clustered, eval_ds)
        logging.info("Clustered model: max %d unique values per kernel, accuracy %.4f",
                     structure.max_unique_per_kernel, accuracy)

        artifact_io.save_model(clustered, output)
        artifact_io.set_properties(output, {
            types.TECHNIQUE_PATH: artifact_io.technique_path(model_artifact, TECHNIQUE),
            types.PARAMETERS: params.parameters_json(exec_properties),
            **artifact_io.structure_properties(structure),
            types.KERAS_ACCURACY: float(accuracy),
        })
