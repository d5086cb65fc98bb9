"""Runs the installed `collabopt` command in a real subprocess, as a user would (pipes, no TTY)."""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from typing import Optional

COLLABOPT = os.path.join(os.path.dirname(sys.executable), "collabopt")
# The chatter that must never reach the console (it belongs in the run's log).
CHATTER = re.compile(r"Unable to register|FutureWarning|WARNING:absl|^[WEI]\d{4} |tensorflow/|"
                     r"cuda|Traceback \(most recent call last\)", re.M | re.I)


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def env(columns: Optional[int] = None, **extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns:
        environ["COLUMNS"] = str(columns)
    environ.update(extra)
    return environ


def collabopt(*args: str, columns: Optional[int] = None, timeout: float = 900,
              cwd: Optional[str] = None) -> Result:
    proc = subprocess.run([COLLABOPT, *args], capture_output=True, text=True, timeout=timeout,
                          env=env(columns), cwd=cwd, stdin=subprocess.DEVNULL)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def start(*args: str, cwd: Optional[str] = None) -> subprocess.Popen:
    """A `collabopt` process running in the background, its output captured as text."""
    return subprocess.Popen([COLLABOPT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env(), cwd=cwd, stdin=subprocess.DEVNULL)


def finish(proc: subprocess.Popen, timeout: float = 900) -> Result:
    stdout, stderr = proc.communicate(timeout=timeout)
    return Result(proc.returncode, stdout, stderr)
