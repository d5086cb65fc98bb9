"""SparseClusterer executor: core.clustering on the input model (core checks the clusters and,
with preserve_sparsity, the kept zeros)."""
from __future__ import annotations

from collabopt.components import params
from collabopt.components.keras_step import KerasStepExecutor


class Executor(KerasStepExecutor):

    def prepare(self, model, exec_properties):
        from collabopt.components.core import clustering

        clustering.check_clusterable(model, params.clustering_params(exec_properties))
        return "cluster"

    def apply(self, model, train_ds, validation_ds, exec_properties, step):
        from collabopt.components.core import clustering

        return clustering.cluster(model, train_ds, params.clustering_params(exec_properties),
                                  params.training_params(exec_properties),
                                  validation_ds=validation_ds)
