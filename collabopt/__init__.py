"""collabopt: collaborative optimization of Keras models for edge deployment, as TFX components.

The distribution installs the repository's `components/` and `pipelines/` folders as
`collabopt.components` and `collabopt.pipelines` (a package-dir mapping in pyproject.toml), so a
user project's own `components` or `pipelines` package never collides with ours.

    from collabopt import Pruner, SparseClusterer, PreservingQAT, TFLiteConverter, VelaCompiler, Evaluator

is the short form of `from collabopt.components import ...`; both import TFX only when a
component is first used.
"""
from collabopt.components.core import tf_env as _tf_env  # noqa: F401  (TF_USE_LEGACY_KERAS first)

__version__ = "0.1.0"

_PUBLIC = ("Pruner", "SparseClusterer", "PreservingQAT", "TFLiteConverter", "VelaCompiler",
           "Evaluator", "TFLiteModel", "VelaModel")

__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'collabopt' has no attribute {name!r}")
    from collabopt import components

    value = getattr(components, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
