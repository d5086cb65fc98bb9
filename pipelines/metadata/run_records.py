"""What `collabopt run` writes into ML Metadata besides TFX: who runs a run, how it ended, and the
marking of executions a dead run left RUNNING (the property names are in `runs`)."""
from __future__ import annotations

import datetime
import json
import os
import socket
import time
from typing import Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from collabopt.pipelines.metadata import runs as r
from collabopt.pipelines.metadata.reader import Context, Execution, Reader


def _set(proto, name: str, value) -> None:
    if isinstance(value, int):  # 32 bits on MySQL: pids and counts only
        proto.custom_properties[name].int_value = value
    elif isinstance(value, float):
        proto.custom_properties[name].double_value = value
    else:
        proto.custom_properties[name].string_value = str(value)


def _context(store: metadata_store.MetadataStore, type_name: str, name: str,
             parent: Optional[Context] = None) -> Context:
    found = store.get_context_by_type_and_name(type_name, name)
    if found is not None:
        return found
    type_id = store.put_context_type(metadata_store_pb2.ContextType(name=type_name))
    [context_id] = store.put_contexts([Context(type_id=type_id, name=name)])
    if parent is not None:
        store.put_parent_contexts([metadata_store_pb2.ParentContext(child_id=context_id,
                                                                    parent_id=parent.id)])
    [context] = store.get_contexts_by_id([context_id])
    return context


def begin_run(reader: Reader, pipeline_name: str, run_id: str, steps: int) -> Context:
    """Creates the run's context (as TFX would, a child of the pipeline context) with its owner:
    TFX then finds it by name and adds the executions to it."""
    layout, store = reader.layout, reader.store
    pipeline = _context(store, layout.pipeline_context, pipeline_name)
    run = _context(store, layout.run_context, run_id, parent=pipeline)
    _set(run, r.RUN_STATE, r.RUNNING)
    _set(run, r.RUN_HOST, socket.gethostname())
    _set(run, r.RUN_PID, os.getpid())
    _set(run, r.RUN_STARTED, time.time())
    _set(run, r.RUN_STEPS, steps)
    store.put_contexts([run])
    return run


def finish_run(reader: Reader, run_id: str, state: str, error: Optional[str] = None) -> None:
    """Records how the run ended; on failure, also gives its FAILED executions that TFX left
    without a reason (an executor that raised) the error, as TFX's own execution result."""
    run = reader.run(run_id)
    if run is None:
        return
    _set(run, r.RUN_STATE, state)
    _set(run, r.RUN_FINISHED, time.time())
    if error:
        _set(run, r.RUN_ERROR, error)
    reader.store.put_contexts([run])
    if state != r.FAILED or not error:
        return
    executions = reader.store.get_executions_by_context(run.id)
    changed = []
    for execution in executions:
        if execution.last_known_state == Execution.FAILED and not r.failure_message(execution):
            execution.custom_properties[r.EXECUTION_RESULT].string_value = json.dumps(
                {"code": 2, "resultMessage": error})
            changed.append(execution)
        elif execution.last_known_state in (Execution.NEW, Execution.RUNNING):
            _mark(execution, f"the run stopped: {error}", run_id)
            changed.append(execution)
    if changed:
        reader.store.put_executions(changed)


def _mark(execution: Execution, reason: str, by_run: str) -> None:
    execution.last_known_state = Execution.CANCELED
    _set(execution, r.ABANDONED_AT,
         datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    _set(execution, r.ABANDONED_REASON, reason)
    _set(execution, r.ABANDONED_BY_RUN, by_run)


def mark_abandoned(reader: Reader, pipeline_name: str, by_run: str) -> list[r.Orphan]:
    """Marks CANCELED the executions of `pipeline_name` left RUNNING by runs whose process is gone.

    Call it holding the pipeline's run lock: then no other run of the pipeline is live on this
    host, so a RUNNING execution of a run with no owner recorded is abandoned too. Runs recorded
    by another host are left alone (their process cannot be checked from here)."""
    store = reader.store
    pipeline = store.get_context_by_type_and_name(reader.layout.pipeline_context, pipeline_name)
    if pipeline is None:
        return []
    unfinished = [e for e in store.get_executions_by_context(pipeline.id)
                  if e.last_known_state in (Execution.NEW, Execution.RUNNING)]
    orphans, changed, dead_runs = [], [], {}
    for execution in unfinished:
        contexts = reader.contexts_of(execution)
        run = reader.run_of(contexts)
        if run is not None and run.name == by_run:
            continue
        alive = r.owner_alive(run) if run is not None else None
        if alive or (alive is None and run is not None and r.custom(run, r.RUN_HOST)):
            continue
        host, pid = (r.custom(run, r.RUN_HOST), r.custom(run, r.RUN_PID)) if run else (None, None)
        reason = (f"its run {run.name if run else '?'} died: "
                  + (f"process {pid} on {host} is gone" if pid else
                     "no owner recorded and no live `collabopt run` holds the pipeline's lock"))
        _mark(execution, reason, by_run)
        changed.append(execution)
        orphans.append(r.Orphan(execution.id, reader.node_id(execution, contexts), True, reason))
        if run is not None:
            dead_runs[run.id] = run
    if changed:
        store.put_executions(changed)
    for run in dead_runs.values():
        if r.custom(run, r.RUN_STATE) == r.RUNNING:
            _set(run, r.RUN_STATE, r.ABANDONED)
    # Runs killed between two steps leave no RUNNING execution, only their recorded state.
    for run in reader.runs():
        if run.id in dead_runs or run.name == by_run or r.custom(run, r.RUN_STATE) != r.RUNNING:
            continue
        if reader.pipeline_of(run) == pipeline_name and r.owner_alive(run) is False:
            _set(run, r.RUN_STATE, r.ABANDONED)
            dead_runs[run.id] = run
    if dead_runs:
        store.put_contexts(list(dead_runs.values()))
    return orphans
