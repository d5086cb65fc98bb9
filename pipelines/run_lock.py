"""One run at a time per pipeline and store: an OS file lock (filelock, `flock`) keyed by both.

Two `collabopt run`s of one pipeline on one store would otherwise both do all the work and both
push. The second is refused with the first run's id, pid and host, or (`wait=True`) waits for it;
it then finds every step in the cache and pushes nothing new. The kernel releases the lock when
its process dies, even by SIGKILL, so a killed run never blocks the next one.

Where the lock lives: next to a SQLite store (`<store>.<pipeline>.lock`); for a MySQL or gRPC
store, in the temp directory, keyed by host, port and database, so it covers the runs started on
one machine. Runs from other machines are not serialized; each still reports only its own run.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import time
import urllib.parse
from typing import Callable, Iterator, Optional

import filelock

from collabopt.components.core.errors import CollaboptError
from collabopt.pipelines.metadata.store import is_local_file, redact


class RunInProgressError(CollaboptError):
    """Another run of the same pipeline holds the store."""


def lock_path(metadata_uri: str, pipeline_name: str) -> str:
    if is_local_file(metadata_uri):
        return f"{os.path.abspath(metadata_uri)}.{pipeline_name}.lock"
    parsed = urllib.parse.urlsplit(metadata_uri)
    where = f"{parsed.scheme}://{parsed.hostname}:{parsed.port}{parsed.path}"   # no user, no password
    key = hashlib.sha256(f"{where}|{pipeline_name}".encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), "collabopt-locks", f"{pipeline_name}-{key}.lock")


def holder(path: str) -> Optional[dict]:
    """Who holds the lock, as the holder wrote it (None if unreadable or not written yet)."""
    try:
        with open(path) as f:
            return json.loads(f.read() or "null")
    except (OSError, ValueError):
        return None


def describe(info: Optional[dict]) -> str:
    if not info:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"run {info.get('run_id')} (pid {info.get('pid')} on {info.get('host')}, started {started})"


@contextlib.contextmanager
def run_lock(metadata_uri: str, pipeline_name: str, run_id: str, wait: bool = False,
             on_wait: Optional[Callable[[str], None]] = None) -> Iterator[str]:
    """Holds the pipeline's lock on the store for the block; yields the lock file's path."""
    path = lock_path(metadata_uri, pipeline_name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lock = filelock.FileLock(path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        other = describe(holder(path))
        if not wait:
            raise RunInProgressError(
                f"Pipeline {pipeline_name!r} is already running on {redact(metadata_uri)}: {other}. "
                "Wait for it to finish, or pass --wait to start when it does (the steps it "
                f"finished are then reused from the cache). Lock: {path}") from None
        if on_wait:
            on_wait(other)
        lock.acquire()
    try:
        with open(path, "w") as f:
            json.dump({"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.time()}, f)
        yield path
    finally:
        with contextlib.suppress(OSError):
            open(path, "w").close()
        lock.release()
