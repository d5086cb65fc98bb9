"""PreservingQAT executor: core.qat in the requested (or measured, for `auto`) mode; core.qat
verifies that pqat / cqat / pcqat kept the input's sparsity and clusters (per output channel for
Conv2D kernels, whose clusters CQAT keeps per channel) and raises StructureLostError if not."""
from __future__ import annotations

from absl import logging

from collabopt.components import params, types
from collabopt.components.keras_step import KerasStepExecutor


class Executor(KerasStepExecutor):
    STEP = "PreservingQAT"

    def step_name(self, exec_properties):
        return params.qat_mode(exec_properties).value   # `auto` is resolved in prepare()

    def prepare(self, model, exec_properties):
        from collabopt.components.core import qat

        mode = qat.resolve_mode(model, params.qat_mode(exec_properties))
        qat.check_quantizable(model, mode)
        logging.info("QAT mode %s", mode.value)
        return mode.value

    def apply(self, model, train_ds, validation_ds, training, exec_properties, step):
        from collabopt.components.core import metrics, preservation, qat

        mode = qat.QATMode(step)
        before = metrics.keras_weight_structure(model)
        if mode == qat.QATMode.QAT and (preservation.is_pruned(before)
                                        or preservation.is_clustered(before)):
            logging.warning("PreservingQAT(qat) does not preserve the input's sparsity / "
                            "clusters; use 'pqat', 'cqat', 'pcqat' or 'auto' to keep them.")
        return qat.quantize_aware_train(model, train_ds, mode,
                                        training, validation_ds=validation_ds)

    def extra_properties(self, step, exec_properties):
        return {types.QAT_MODE: step}
