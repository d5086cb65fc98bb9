"""Keeps the console for collabopt's own lines: everything else written to fds 1 and 2 (TensorFlow,
CUDA, absl, the TFLite converter, Vela, warnings) goes to a log file instead, with secrets masked.

The redirection is at the file-descriptor level (`os.dup2`), so C++ output is caught as well as
Python's. A thread pumps the pipe into the log, line by line, masking every secret (a store's
password) on the way; `verbose=True` copies each line to the terminal too. The CLI's rich consoles
are pointed at a duplicate of the original stderr/stdout for the duration (`terminal`).
Hand-written (~60 lines): no maintained library redirects C-level output with a tee and masking.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import IO, Optional, Sequence


class OutputCapture:
    """Context manager: fds 1 and 2 -> `log_path` (None: discarded) [+ the terminal if verbose]."""

    def __init__(self, log_path: Optional[str], verbose: bool = False,
                 secrets: Sequence[str] = (), header: str = ""):
        self.log_path = log_path
        self.header = header
        self.verbose = verbose
        self.secrets = [s.encode() for s in secrets if s]
        self.terminal_err: Optional[IO[str]] = None
        self.terminal_out: Optional[IO[str]] = None
        self._saved: dict[int, int] = {}
        self._thread: Optional[threading.Thread] = None

    def _mask(self, line: bytes) -> bytes:
        for secret in self.secrets:
            line = line.replace(secret, b"***")
        return line

    def _pump(self, read_fd: int, log: Optional[IO[bytes]]) -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            for line in iter(pipe.readline, b""):
                line = self._mask(line)
                if log is not None:
                    log.write(line)
                    log.flush()
                if self.verbose:
                    try:
                        os.write(self._saved[2], line)
                    except OSError:  # the capture ended while a child still wrote
                        self.verbose = False
        if log is not None:
            log.close()

    def __enter__(self) -> "OutputCapture":
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        log = None
        if self.log_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
            log = open(self.log_path, "ab")
            if self.header:
                log.write(self._mask(self.header.encode()) + b"\n")
        self._saved = {1: os.dup(1), 2: os.dup(2)}
        self.terminal_out = os.fdopen(os.dup(self._saved[1]), "w", buffering=1)
        self.terminal_err = os.fdopen(os.dup(self._saved[2]), "w", buffering=1)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._thread = threading.Thread(target=self._pump, args=(read_fd, log), daemon=True,
                                        name="collabopt-output-capture")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(self._saved[1], 1)   # closes the pipe's write ends: the pump sees EOF
        os.dup2(self._saved[2], 2)
        if self._thread is not None:
            # A child process still holding the pipe keeps it open: do not wait for it forever.
            self._thread.join(timeout=10)
        for fd in self._saved.values():
            os.close(fd)
        for stream in (self.terminal_out, self.terminal_err):
            if stream is not None:
                stream.close()
