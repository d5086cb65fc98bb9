"""Runs that share a store, as a user meets them: real `collabopt` processes on one config and one
SQLite store, in this order (one module fixture, each test reads what it needs):

1. run A starts; run B on the same config is refused at once, naming A; run C (`--wait -v`) waits
   for A, then finds every step in A's cache;
2. a run whose Trainer raises fails; readers then show C's results and say the latest run failed;
3. a run killed by SIGKILL while a step is RUNNING: `runs` reports the orphan read-only, the next
   run marks it CANCELED (abandoned, when, why, by which run) and completes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import time

import pytest
import yaml
from ml_metadata.proto import metadata_store_pb2 as pb

from collabopt.pipelines.metadata import runs as r
from collabopt.pipelines.metadata.reader import Reader
from collabopt.pipelines.metadata.store import open_store
from collabopt.pipelines.run_lock import holder, lock_path
from tests.pipelines.cli_process import CHATTER, Result, collabopt, finish, start
from tests.pipelines.conftest import write_small_config

pytestmark = pytest.mark.e2e

PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] (\S+) (done|cached|failed|skipped)$", re.M)
RUN_LINE = re.compile(r"^Run (\S+) of (\S+) on (.+)$", re.M)
FAILING_TRAINER = '''
def run_fn(fn_args):
    raise RuntimeError("boom: this base model cannot be trained")
'''


@dataclasses.dataclass
class History:
    workdir: str
    config_path: str
    metadata: str
    pipeline: str
    leaves: list[str]                 # the paths of the config's leaves (levels included)
    a: Result
    b: Result
    c: Result
    pushed_after_c: list[str]         # what serving/ held once A and C had finished
    failed: Result
    leaves_after_failure: Result
    lineage_after_failure: Result
    report_after_failure: Result
    report_dir: str
    killed_run: str
    killed_node: str
    runs_after_kill: Result
    digest_before_runs: str
    digest_after_runs: str
    e: Result


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _wait_for(predicate, proc, what: str, timeout: float = 600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: " + "".join(proc.communicate()))
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _holder(metadata: str, pipeline: str, not_run: str = ""):
    info = holder(lock_path(metadata, pipeline))
    return info if info and info.get("run_id") and info["run_id"] != not_run else None


def _running_step(metadata: str, run_id: str):
    """A step of run `run_id` that is RUNNING now (not an input step), if any."""
    try:
        reader = Reader(open_store(metadata))
        run = reader.run(run_id)
        executions = reader.store.get_executions_by_context(run.id) if run else []
    except Exception:  # the store is being written: look again
        return None
    for execution in executions:
        if execution.last_known_state == pb.Execution.RUNNING:
            node = reader.node_id(execution)
            if node not in ("ImportExampleGen", "Trainer"):
                return execution.id, node
    return None


def _variant(config_path: str, name: str, **changes) -> str:
    with open(config_path) as f:
        raw = yaml.safe_load(f)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            raw[section][field] = value
        else:
            raw[section] = value
    path = os.path.join(os.path.dirname(config_path), name)
    with open(path, "w") as f:
        yaml.safe_dump(raw, f, sort_keys=False)
    return path


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> History:
    from collabopt.pipelines.config import load_config

    workdir = str(tmp_path_factory.mktemp("history"))
    config_path = write_small_config(workdir)
    config = load_config(config_path)
    metadata, pipeline = config.metadata, config.pipeline_name

    # 1. A runs; B is refused; C waits for A.
    a = start("run", config_path)
    try:
        first = _wait_for(lambda: _holder(metadata, pipeline), a, "run A took the lock")
        b = collabopt("run", config_path)
        c = start("run", config_path, "--wait", "-v")
        a_result = finish(a)
    finally:
        a.kill()
    c_result = finish(c)
    assert first["run_id"] in a_result.stderr
    pushed_after_c = os.listdir(config.serving_dir)

    # 2. A run that fails: its Trainer raises.
    trainer = os.path.join(workdir, "failing_trainer.py")
    with open(trainer, "w") as f:
        f.write(FAILING_TRAINER)
    failing = _variant(config_path, "failing.yaml", base_model={"module_file": trainer})
    failed = collabopt("run", failing)
    leaves_after_failure = collabopt("leaves", "--metadata", metadata, columns=80)
    lineage_after_failure = collabopt("lineage", "--selected", "--json", "--metadata", metadata)
    report_dir = os.path.join(workdir, "report")
    report_after_failure = collabopt("report", "--metadata", metadata, "--out", report_dir)

    # 3. A run killed while a step runs (two epochs: every step after the Trainer runs again).
    changed = _variant(config_path, "epochs2.yaml", training__epochs=2)
    d = start("run", changed)
    try:
        killed_run = _wait_for(lambda: _holder(metadata, pipeline), d, "run D took the lock")
        killed_run = killed_run["run_id"]
        _, killed_node = _wait_for(lambda: _running_step(metadata, killed_run), d,
                                   "a step of run D running")
        d.send_signal(signal.SIGKILL)
    finally:
        d.kill()
        d.communicate(timeout=60)
    before = _digest(metadata)
    runs_after_kill = collabopt("runs", "--json", "--metadata", metadata)
    after = _digest(metadata)
    e = collabopt("run", changed)
    paths = [leaf.path for leaf in config.all_leaves()]
    return History(workdir, config_path, metadata, pipeline, paths, a_result, b,
                   c_result, pushed_after_c, failed, leaves_after_failure, lineage_after_failure,
                   report_after_failure, report_dir, killed_run, killed_node, runs_after_kill,
                   before, after, e)


def _run_id(result: Result) -> str:
    match = RUN_LINE.search(result.stderr)
    assert match, result.stderr
    return match.group(1)


def _runs(history: History) -> dict[str, dict]:
    result = collabopt("runs", "--json", "--metadata", history.metadata)
    assert result.returncode == 0, result.stderr
    return {run["run_id"]: run for run in json.loads(result.stdout)}


def _leaf_rows(stdout: str, leaves: list[str]) -> list[str]:
    """The leaves named in table rows (first cell), in order of appearance."""
    names = []
    for line in stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        if cells and cells[0] in leaves and cells[0] not in names:
            names.append(cells[0])
    return names


# --- 1. concurrent runs ------------------------------------------------------------------------

def test_second_run_is_refused_naming_the_first(history):
    a_id = _run_id(history.a)
    b = history.b
    assert b.returncode == 2 and b.stdout == ""
    assert len(b.err_lines) == 1, b.stderr
    assert "already running" in b.stderr and a_id in b.stderr and "--wait" in b.stderr
    # B never started: no run id, no log (A, C, the failed run, the killed one and E have one).
    logs = os.listdir(os.path.join(history.workdir, "pipeline_root", "logs"))
    started = [_run_id(x) for x in (history.a, history.c, history.failed, history.e)]
    assert sorted(logs) == sorted(i.replace(":", "") + ".log"
                                  for i in started + [history.killed_run])


def test_each_run_reports_its_own_run(history):
    a, c = history.a, history.c
    assert a.returncode == 0, a.stderr
    assert c.returncode == 0, c.stderr
    a_id, c_id = _run_id(a), _run_id(c)
    assert a_id != c_id
    assert f"Waiting for run {a_id}" in c.stderr
    # Progress counts this run's steps only: never more than the total, every step once.
    for result, state in ((a, "done"), (c, "cached")):
        steps = PROGRESS.findall(result.stderr)
        assert steps, result.stderr
        totals = {int(total) for _, total, _, _ in steps}
        assert len(totals) == 1 and all(int(done) <= int(total) for done, total, _, _ in steps)
        assert [int(done) for done, _, _, _ in steps] == list(range(1, totals.pop() + 1))
        assert {s for _, _, _, s in steps} == {state}
        assert _leaf_rows(result.stdout, history.leaves) == history.leaves
    runs = _runs(history)
    assert runs[a_id]["state"] == runs[c_id]["state"] == "complete"
    assert runs[a_id]["leaves"] == runs[c_id]["leaves"] == len(history.leaves)
    assert runs[a_id]["selected"] == runs[c_id]["selected"] in history.leaves


def test_only_the_first_run_pushes_and_the_second_says_so(history):
    assert "the Pusher deployed it to" in history.a.stderr
    assert "nothing new was pushed" in history.c.stderr
    assert len(history.pushed_after_c) == 1


def test_console_is_quiet_and_the_log_holds_the_chatter(history):
    a = history.a
    assert not CHATTER.search(a.stderr + a.stdout), a.stderr
    log = re.search(r"^Log: (\S+)", a.stderr, re.M).group(1)
    with open(log) as f:
        text = f.read()
    assert text.startswith(f"collabopt run {_run_id(a)} ")
    assert "WARNING" in text and len(text.splitlines()) > 5   # TF / absl / converter output
    known = (PROGRESS, RUN_LINE, re.compile(r"^Log: "), re.compile(r"^Selected "),
             re.compile(r"^Pre-flight: data ok \(train \d+, eval \d+ examples\)"))
    for line in a.err_lines:
        assert any(p.search(line) for p in known), line
    # -v: the waiting run showed its log live as well.
    c_log = re.search(r"^Log: (\S+)", history.c.stderr, re.M).group(1)
    with open(c_log) as f:
        lines = [line.rstrip("\n") for line in f.read().splitlines()[1:] if line.strip()]
    assert lines and all(line in history.c.stderr for line in lines)


# --- 2. a failed run ---------------------------------------------------------------------------

def test_a_failed_run_is_one_line_and_its_error_is_recorded(history):
    failed = history.failed
    assert failed.returncode == 2 and failed.stdout == ""
    error = [line for line in failed.err_lines if line.startswith("error:")]
    assert len(error) == 1 and "RuntimeError: boom" in error[0] and "traceback is in" in error[0]
    assert not CHATTER.search(failed.stderr)
    failed_id = _run_id(failed)
    run = _runs(history)[failed_id]
    assert run["state"] == "failed" and run["leaves"] == 0
    assert "Trainer failed" in run["error"] and "boom" in run["error"]
    log = re.search(r"^Log: (\S+)", failed.stderr, re.M).group(1)
    assert "Traceback" in open(log).read()


def test_readers_show_the_last_good_run_and_say_the_latest_failed(history):
    failed_id, c_id = _run_id(history.failed), _run_id(history.c)
    note = f"The latest run {failed_id} failed: Trainer failed: RuntimeError: boom"
    leaves = history.leaves_after_failure
    assert leaves.returncode == 0, leaves.stderr
    assert leaves.err_lines[0].startswith(f"Leaves of run {c_id} of {history.pipeline} (complete")
    assert leaves.err_lines[1].startswith(note) and f"--run-id {failed_id}" in leaves.err_lines[1]
    assert _leaf_rows(leaves.stdout, history.leaves) == history.leaves
    lineage = history.lineage_after_failure
    assert lineage.returncode == 0 and note in lineage.stderr
    assert json.loads(lineage.stdout)["run"] == c_id
    report = history.report_after_failure
    assert report.returncode == 0 and note in report.stderr
    with open(os.path.join(history.report_dir, "index.html")) as f:
        page = f.read()
    assert c_id in page and failed_id in page and "boom" in page
    # The failed run itself is one flag away.
    explicit = collabopt("leaves", "--metadata", history.metadata, "--run-id", failed_id)
    assert explicit.returncode == 2 and len(explicit.err_lines) == 1
    assert f"Run {failed_id} failed: Trainer failed: RuntimeError: boom" in explicit.stderr


# --- 3. a killed run ---------------------------------------------------------------------------

def test_runs_reports_a_killed_runs_orphan_without_writing(history):
    result = history.runs_after_kill
    assert result.returncode == 0, result.stderr
    assert history.digest_before_runs == history.digest_after_runs
    killed = {run["run_id"]: run for run in json.loads(result.stdout)}[history.killed_run]
    assert killed["state"] == "abandoned"
    [orphan] = killed["orphans"]
    assert orphan["node_id"] == history.killed_node and not orphan["marked"]
    assert "is gone" in orphan["reason"]


def test_next_run_marks_the_orphan_and_completes(history):
    e = history.e
    assert e.returncode == 0, e.stderr
    assert re.search(rf"^Marked execution #\d+ \({re.escape(history.killed_node)}\) CANCELED, "
                     rf"abandoned: its run {re.escape(history.killed_run)} died", e.stderr, re.M)
    runs = _runs(history)
    killed, e_run = runs[history.killed_run], runs[_run_id(e)]
    assert killed["state"] == "abandoned" and e_run["state"] == "complete"
    [orphan] = killed["orphans"]
    assert orphan["marked"] and orphan["node_id"] == history.killed_node
    reader = Reader(open_store(history.metadata))
    [execution] = reader.store.get_executions_by_id([orphan["execution_id"]])
    assert execution.last_known_state == pb.Execution.CANCELED
    assert r.custom(execution, r.ABANDONED_BY_RUN) == _run_id(e)
    assert r.custom(execution, r.ABANDONED_AT) and "is gone" in r.custom(execution,
                                                                         r.ABANDONED_REASON)
    text = collabopt("runs", "--metadata", history.metadata, columns=100)
    assert text.returncode == 0 and "abandoned" in text.stdout
