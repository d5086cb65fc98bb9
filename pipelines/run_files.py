"""A run's id and where its log goes: needed by the CLI before it imports TFX (and TensorFlow)."""
from __future__ import annotations

import datetime
import os
import tempfile

from collabopt.pipelines.metadata.store import is_local_file


def new_run_id() -> str:
    """A pipeline run id, as LocalDagRunner names its runs (the local time, ISO 8601)."""
    return datetime.datetime.now().isoformat()


def log_path(pipeline_root: str, pipeline_name: str, run_id: str) -> str:
    """`<pipeline_root>/logs/<run id>.log`, or under the temp dir when the root is remote."""
    name = run_id.replace(":", "") + ".log"
    if is_local_file(pipeline_root):
        return os.path.join(pipeline_root, "logs", name)
    return os.path.join(tempfile.gettempdir(), "collabopt-logs", pipeline_name, name)
