"""collabopt's TFX components for collaborative optimization (prune, cluster, quantize, compile).

    from components import (Pruner, SparseClusterer, PreservingQAT, TFLiteConverter,
                            VelaCompiler, Evaluator)

The components are imported lazily (PEP 562): `import components.core.pruning` never imports TFX.
"""
from components.core import keras_compat as _keras_compat  # noqa: F401  (TF_USE_LEGACY_KERAS first)

import importlib as _importlib

_COMPONENTS = {
    "Pruner": "components.pruner.component",
    "SparseClusterer": "components.sparse_clusterer.component",
    "PreservingQAT": "components.preserving_qat.component",
    "TFLiteConverter": "components.tflite_converter.component",
    "VelaCompiler": "components.vela_compiler.component",
    "Evaluator": "components.evaluator.component",
    "TFLiteModel": "components.types",
    "VelaModel": "components.types",
}

__all__ = list(_COMPONENTS)


def __getattr__(name: str):
    module = _COMPONENTS.get(name)
    if module is None:
        raise AttributeError(f"module 'components' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
