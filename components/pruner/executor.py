"""Pruner executor: core.pruning on the input model (core checks the target sparsity)."""
from __future__ import annotations

from collabopt.components import params, types
from collabopt.components.core import leaves
from collabopt.components.keras_step import KerasStepExecutor


class Executor(KerasStepExecutor):
    STEP = "Pruner"

    def step_name(self, exec_properties):
        p = params.pruning_params(exec_properties)
        return leaves.prune_step(p.target_sparsity, p.sparsity_m_by_n)

    def prepare(self, model, exec_properties):
        from collabopt.components.core import pruning

        pruning.check_prunable(model, params.pruning_params(exec_properties))
        return self.step_name(exec_properties)

    def apply(self, model, train_ds, validation_ds, training, exec_properties, step):
        from collabopt.components.core import pruning

        return pruning.prune(model, train_ds, params.pruning_params(exec_properties),
                             training, validation_ds=validation_ds)

    def extra_properties(self, step, exec_properties):
        p = params.pruning_params(exec_properties)
        return {types.LEVELS: {"target_sparsity": p.target_sparsity}}
