"""The deployment-tree pipeline, its runners, lineage, report and CLI."""
from collabopt.components.core import keras_compat as _keras_compat  # noqa: F401  (TF_USE_LEGACY_KERAS first)
