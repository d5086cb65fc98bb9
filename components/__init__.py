"""collabopt's TFX components for collaborative optimization (prune, cluster, quantize, compile).

    from collabopt.components import (Pruner, SparseClusterer, PreservingQAT, TFLiteConverter,
                                      VelaCompiler, Evaluator)

The components are imported lazily (PEP 562): `import collabopt.components.core.pruning` never
imports TFX.
"""
from collabopt.components.core import tf_env as _tf_env  # noqa: F401  (TF_USE_LEGACY_KERAS first)

import importlib as _importlib

_COMPONENTS = {
    "Pruner": "collabopt.components.pruner.component",
    "SparseClusterer": "collabopt.components.sparse_clusterer.component",
    "PreservingQAT": "collabopt.components.preserving_qat.component",
    "TFLiteConverter": "collabopt.components.tflite_converter.component",
    "VelaCompiler": "collabopt.components.vela_compiler.component",
    "Evaluator": "collabopt.components.evaluator.component",
    "TFLiteModel": "collabopt.components.types",
    "VelaModel": "collabopt.components.types",
}

__all__ = list(_COMPONENTS)


def __getattr__(name: str):
    module = _COMPONENTS.get(name)
    if module is None:
        raise AttributeError(f"module 'collabopt.components' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
