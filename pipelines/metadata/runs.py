"""The runs in a store: their state, error, leaves and selected leaf; which run a reader shows.

A run's state comes from its executions and from what `collabopt run` records on its run context
(the `RUN_*` custom properties: who runs it, and how it ended). A Kubeflow run has no such record
and its root DAG execution does not record how the run ended (see `layout.KFP_V2`): its state comes
from its steps alone, and a step KFP recorded FAILED carries no reason in ML Metadata.

- `running`: the process that records it is alive (checked on this host by pid and start time);
- `complete`: it finished; `failed`: an execution failed or the run raised (`error` says why);
- `abandoned`: its process is gone while the run was still going (killed, power loss). Its
  executions left RUNNING are *orphans*. Readers only report them; the next `collabopt run` of the
  pipeline marks them CANCELED with the `ABANDONED_*` custom properties (see `run_records`).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import socket
from typing import Any, Optional

from collabopt.components.core.errors import CollaboptError
from collabopt.components.properties import property_value
from collabopt.pipelines.metadata.leaves import LeafRecord, leaves_of_run
from collabopt.pipelines.metadata.reader import Context, Execution, Reader, artifact_properties

# Custom properties `collabopt run` writes on its run context.
RUN_STATE = "collabopt_state"             # running | complete | failed | abandoned
RUN_ERROR = "collabopt_error"             # one line: why the run failed
RUN_HOST = "collabopt_host"
RUN_PID = "collabopt_pid"
# Times are doubles (seconds since the epoch): MLMD's MySQL schema holds int properties in 32 bits.
RUN_STARTED = "collabopt_started"         # when the owning process began the run
RUN_FINISHED = "collabopt_finished"
RUN_STEPS = "collabopt_steps"             # nodes in the compiled pipeline
# Custom properties on an execution a dead run left RUNNING, once a later run marked it CANCELED.
ABANDONED_AT = "abandoned_at"             # ISO time of the marking
ABANDONED_REASON = "abandoned_reason"
ABANDONED_BY_RUN = "abandoned_by_run"     # the run that found it
# TFX's record of an executor's result (tfx/orchestration/portable/mlmd/execution_lib.py).
EXECUTION_RESULT = "__execution_result__"

RUNNING, COMPLETE, FAILED, ABANDONED = "running", "complete", "failed", "abandoned"
_UNFINISHED = (Execution.NEW, Execution.RUNNING)


@dataclasses.dataclass
class Orphan:
    """An execution a dead run left RUNNING (marked: a later run set it CANCELED)."""

    execution_id: int
    node_id: str
    marked: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RunInfo:
    run_id: str
    pipeline: str
    started: Optional[str]                    # ISO time, local (as run ids are)
    state: str
    error: Optional[str]                      # failed: `<node>: <error>`; else a note or None
    leaves: int                               # leaves evaluated (or reused from the cache)
    selected: Optional[str]                   # the selected leaf's technique path
    executions: int
    orphans: list[Orphan]
    owner: Optional[str]                      # `pid N on host` for runs `collabopt run` started
    records: list[LeafRecord] = dataclasses.field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("records")
        return data

    def summary(self) -> str:
        """One line: which run, its state and when it started."""
        text = f"run {self.run_id}"
        if self.pipeline:
            text += f" of {self.pipeline}"
        text += f" ({self.state}"
        if self.started:
            text += f", started {self.started[:19].replace('T', ' ')}"
        return text + ")"


def iso(ms: int) -> Optional[str]:
    """Milliseconds since the epoch as ISO 8601, UTC."""
    if not ms:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc).isoformat(
        timespec="seconds")


def local_iso(ms: int) -> Optional[str]:
    """Milliseconds since the epoch as ISO 8601 in local time, with its offset."""
    if not ms:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="seconds")


def custom(proto, name: str) -> Any:
    return property_value(proto.custom_properties[name]) if name in proto.custom_properties \
        else None


def failure_message(execution: Execution) -> Optional[str]:
    """The failure TFX (or `collabopt run`) recorded on a FAILED execution: its last line."""
    raw = custom(execution, EXECUTION_RESULT)
    if not raw:
        return None
    try:
        message = json.loads(raw).get("resultMessage", "")
    except ValueError:
        message = raw
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return lines[-1] if lines else None


def owner_alive(run: Context) -> Optional[bool]:
    """Whether the process that records `run` is alive: None when unknown (no owner recorded, or
    another host); on this host, its pid must exist and have started before the run."""
    import psutil

    host, pid, started = custom(run, RUN_HOST), custom(run, RUN_PID), custom(run, RUN_STARTED)
    if not host or not pid or host != socket.gethostname():
        return None
    try:
        process = psutil.Process(int(pid))
        return process.create_time() <= (started or 0) + 1
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def run_info(reader: Reader, run: Context, with_leaves: bool = True) -> RunInfo:
    executions = reader.steps(run)
    recorded = custom(run, RUN_STATE)
    failed = [e for e in executions if e.last_known_state == Execution.FAILED]
    unfinished = [e for e in executions if e.last_known_state in _UNFINISHED]
    marked = [e for e in executions if e.last_known_state == Execution.CANCELED
              and ABANDONED_AT in e.custom_properties]
    alive = owner_alive(run) if recorded == RUNNING or unfinished else None
    host, pid = custom(run, RUN_HOST), custom(run, RUN_PID)
    owner = f"pid {pid} on {host}" if host and pid else None

    error = None
    if failed:
        state = FAILED
        no_reason = reader.layout.no_failure_reason
        error = "; ".join(f"{reader.node_id(e)} failed: {failure_message(e) or no_reason}"
                          for e in failed)
    elif recorded == FAILED:
        state, error = FAILED, custom(run, RUN_ERROR) or "no reason recorded"
    elif recorded == ABANDONED or marked:
        state = ABANDONED
    elif recorded == RUNNING or unfinished:
        if alive is False:
            state = ABANDONED
        else:
            state = RUNNING
            if alive is None:
                error = (f"recorded as running by {owner}: not checkable from this host" if owner
                         else reader.layout.unowned_running)
    else:
        state = COMPLETE

    orphans = []
    for e in marked:
        orphans.append(Orphan(e.id, reader.node_id(e), True, str(custom(e, ABANDONED_REASON))))
    if state == ABANDONED:
        why = f"its process ({owner}) is gone" if owner else "no live run holds it"
        for e in unfinished:
            orphans.append(Orphan(e.id, reader.node_id(e), False,
                                  f"left {Execution.State.Name(e.last_known_state)}: {why}; the "
                                  "next `collabopt run` of the pipeline marks it CANCELED"))
    records: list[LeafRecord] = []
    selected = None
    if with_leaves:
        artifacts = reader.run_artifacts(run)
        records = leaves_of_run(artifacts)
        selected = next((r.path for r in records if r.selected), None)
    return RunInfo(run_id=run.name, pipeline=reader.pipeline_of(run),
                   started=local_iso(custom(run, RUN_STARTED) * 1000 if custom(run, RUN_STARTED)
                                     else run.create_time_since_epoch),
                   state=state, error=error, leaves=len(records), selected=selected,
                   executions=len(executions), orphans=orphans, owner=owner, records=records)


def list_runs(reader: Reader, pipeline: Optional[str] = None) -> list[RunInfo]:
    """Every run in the store (of `pipeline`, if given), oldest first."""
    infos = [run_info(reader, run) for run in reader.runs()]
    return [i for i in infos if pipeline is None or i.pipeline == pipeline]


@dataclasses.dataclass
class Choice:
    """The run a reader shows, and the latest run when that is another one (with why)."""

    shown: RunInfo
    latest: RunInfo
    explicit: bool = False                    # the caller asked for `shown` by its id

    @property
    def note(self) -> Optional[str]:
        """What is wrong with the shown run, or why it is not the latest."""
        latest, shown = self.latest, self.shown
        if self.explicit or latest.run_id == shown.run_id:
            if shown.state == FAILED:
                return f"Run {shown.run_id} failed: {shown.error}"
            if shown.state in (RUNNING, ABANDONED):
                return f"Run {shown.run_id} is {shown.state}."
            return None if shown.leaves else f"Run {shown.run_id} evaluated no leaf."
        what = {FAILED: f"failed: {latest.error}",
                RUNNING: "is still running",
                ABANDONED: "was abandoned (its process is gone)"}.get(
                    latest.state, "evaluated no leaf")
        return (f"The latest run {latest.run_id} {what}. Showing {shown.run_id}, the latest run "
                f"that evaluated leaves (--run-id {latest.run_id} shows the latest).")


class NoRunError(CollaboptError):
    """The store has no run, or not the one asked for."""


def choose_run(reader: Reader, run_id: Optional[str] = None,
               where: str = "PATH") -> Choice:
    """`run_id`, or by default the latest run that evaluated leaves (else the latest run)."""
    runs = reader.runs()
    if not runs:
        raise NoRunError("This ML Metadata store holds no pipeline run yet: run a pipeline first "
                         "(`collabopt demo` or `collabopt run pipeline.yaml`).")
    latest = run_info(reader, runs[-1])
    if run_id is not None:
        run = reader.run(run_id)
        if run is None:
            raise NoRunError(f"No pipeline run {run_id!r} in this ML Metadata store; "
                             f"`collabopt runs --metadata {where}` lists them.")
        return Choice(run_info(reader, run), latest, explicit=True)
    if latest.leaves:
        return Choice(latest, latest)
    for run in reversed(runs[:-1]):
        info = run_info(reader, run)
        if info.leaves:
            return Choice(info, latest)
    return Choice(latest, latest)


@dataclasses.dataclass
class Push:
    """What the run's Pusher did: pushed now, reused an earlier push (cached), or pushed nothing."""

    state: str                                # Execution state name: COMPLETE, CACHED, …
    pushed: bool
    destination: Optional[str]


def pushes(reader: Reader, run: Context) -> list[Push]:
    """The run's PushedModel outputs with the state of the execution that gave them to the run."""
    executions = reader.steps(run)
    events = reader.store.get_events_by_execution_ids([e.id for e in executions])
    states = {e.id: e.last_known_state for e in executions}
    outputs = {ev.artifact_id: states[ev.execution_id] for ev in events
               if ev.type == ev.OUTPUT and ev.execution_id in states}
    found = []
    if outputs:
        for artifact in reader.artifacts(outputs):
            if reader.artifact_type(artifact) != "PushedModel":
                continue
            props = artifact_properties(artifact)
            found.append(Push(Execution.State.Name(outputs[artifact.id]),
                              bool(props.get("pushed")), props.get("pushed_destination")))
    return found


__all__ = ["RunInfo", "Orphan", "Choice", "Push", "NoRunError", "run_info", "list_runs",
           "choose_run", "pushes", "owner_alive", "failure_message"]
