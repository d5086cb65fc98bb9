"""Pruner executor: core.pruning on the input model (core checks the target sparsity)."""
from __future__ import annotations

from collabopt.components import params
from collabopt.components.keras_step import KerasStepExecutor


class Executor(KerasStepExecutor):

    def prepare(self, model, exec_properties):
        from collabopt.components.core import pruning

        pruning.check_prunable(model, params.pruning_params(exec_properties))
        return "prune"

    def apply(self, model, train_ds, validation_ds, exec_properties, step):
        from collabopt.components.core import pruning

        return pruning.prune(model, train_ds, params.pruning_params(exec_properties),
                             params.training_params(exec_properties),
                             validation_ds=validation_ds)
