"""The deployment-tree pipeline, its runners, lineage, report and CLI."""
from collabopt.components.core import tf_env as _tf_env  # noqa: F401  (TF_USE_LEGACY_KERAS first)
