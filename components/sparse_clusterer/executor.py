"""SparseClusterer executor: core.clustering on the input model (core checks the clusters and,
with preserve_sparsity, the kept zeros)."""
from __future__ import annotations

from collabopt.components import params, types
from collabopt.components.core import leaves
from collabopt.components.keras_step import KerasStepExecutor


class Executor(KerasStepExecutor):
    STEP = "SparseClusterer"

    def step_name(self, exec_properties):
        return leaves.cluster_step(params.clustering_params(exec_properties).number_of_clusters)

    def prepare(self, model, exec_properties):
        from collabopt.components.core import clustering

        clustering.check_clusterable(model, params.clustering_params(exec_properties))
        return self.step_name(exec_properties)

    def apply(self, model, train_ds, validation_ds, training, exec_properties, step):
        from collabopt.components.core import clustering

        return clustering.cluster(model, train_ds, params.clustering_params(exec_properties),
                                  training, validation_ds=validation_ds)

    def extra_properties(self, step, exec_properties):
        p = params.clustering_params(exec_properties)
        return {types.LEVELS: {"number_of_clusters": p.number_of_clusters}}
