"""Runs the deployment-tree pipeline locally (LocalDagRunner or BeamDagRunner) or compiles it for
Kubeflow Pipelines v2. `tree.create_pipeline` knows nothing of runners; these wrap it."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
from typing import Callable, Iterator, Optional

from absl import logging as absl_logging
from ml_metadata.proto import metadata_store_pb2
from tfx.dsl.compiler import compiler, constants
from tfx.dsl.io import fileio
from tfx.orchestration import pipeline as pipeline_lib
from tfx.orchestration.portable import runtime_parameter_utils
from tfx.proto.orchestration import pipeline_pb2

from collabopt.components.core.errors import ConfigError
from collabopt.components.core.leaves import Leaf
from collabopt.pipelines import search
from collabopt.pipelines.config import Mode, PipelineConfig, Runner, check_local_inputs
from collabopt.pipelines.metadata import run_records, runs as run_states
from collabopt.pipelines.metadata.reader import Reader
from collabopt.pipelines.metadata.runs import Orphan
from collabopt.pipelines.metadata.store import connection_config, open_store
from collabopt.pipelines.run_files import new_run_id
from collabopt.pipelines.run_lock import run_lock
from collabopt.pipelines.tree import create_pipeline

_DONE = {metadata_store_pb2.Execution.COMPLETE: "done", metadata_store_pb2.Execution.CACHED: "cached",
         metadata_store_pb2.Execution.FAILED: "failed", metadata_store_pb2.Execution.CANCELED: "skipped"}


def build(config: PipelineConfig, leaves: Optional[list[Leaf]] = None,
          search_trace: Optional[str] = None, push: bool = True) -> pipeline_lib.Pipeline:
    metadata_dir = os.path.dirname(config.metadata)
    if "://" not in config.metadata and metadata_dir:
        fileio.makedirs(metadata_dir)
    return create_pipeline(config, connection_config(config.metadata), leaves=leaves,
                           search_trace=search_trace, push=push)


@dataclasses.dataclass
class RunResult:
    run_id: str
    orphans: list[Orphan]                     # executions of dead runs this run marked CANCELED
    search_trace: Optional[dict] = None       # mode: search: the levels tried and why it stopped


def compile_ir(pipeline: pipeline_lib.Pipeline, run_id: str) -> pipeline_pb2.Pipeline:
    """The pipeline IR with its run id fixed, so the runner records the run under `run_id`.

    LocalDagRunner and BeamDagRunner substitute the `pipeline-run-id` runtime parameter with a
    timestamp of their own in `run_with_ir`; substituted first, the parameter is a plain value and
    their substitution leaves it alone (tfx/orchestration/portable/runtime_parameter_utils.py)."""
    for component in pipeline.components:  # as TfxRunner.run does before compiling
        if hasattr(component, "_resolve_pip_dependencies"):
            component._resolve_pip_dependencies(pipeline.pipeline_info.pipeline_root)
    ir = compiler.Compiler().compile(pipeline)
    runtime_parameter_utils.substitute_runtime_parameter(
        ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
    return ir


def run(config: PipelineConfig, runner: Optional[Runner | str] = None, progress=None,
        run_id: Optional[str] = None, wait: bool = False,
        on_wait: Optional[Callable[[str], None]] = None,
        on_start: Optional[Callable[[list[Orphan]], None]] = None) -> RunResult:
    """Runs the pipeline to completion as run `run_id` (default: a new one) and returns it;
    `progress(done, total, last_node)` is called as this run's nodes finish, `on_wait(holder)`
    when another run holds the lock and `wait` is set, `on_start(orphans)` once this run holds it.

    Holds the pipeline's lock on the store (run_lock: a second run is refused, or waits with
    `wait=True`), marks executions left RUNNING by dead runs CANCELED, and records on the run's
    context who runs it and how it ended (metadata.run_records). `mode: search` runs several
    rounds under the one lock: each round is a pipeline run of its own (`<run_id>.round<n>`),
    and the last, which holds every leaf tried, is `run_id`."""
    runner = Runner(runner or config.runner)
    run_id = run_id or new_run_id()
    check_local_inputs(config)
    with run_lock(config.metadata, config.pipeline_name, run_id, wait=wait, on_wait=on_wait):
        reader = Reader(open_store(config.metadata, readonly=False))
        orphans = run_records.mark_abandoned(reader, config.pipeline_name, by_run=run_id)
        if on_start:  # holding the lock: the run starts now
            on_start(orphans)
        trace = None
        if config.mode == Mode.SEARCH:
            trace = _run_search(config, runner, progress, run_id, reader)
        else:
            _run_one(build(config), config, runner, progress, run_id, reader)
    return RunResult(run_id, orphans, trace)


def _run_one(pipeline: pipeline_lib.Pipeline, config: PipelineConfig, runner: Runner, progress,
             run_id: str, reader: Reader) -> None:
    """One pipeline run, recorded as `run_id` (begin, then complete or failed with its error)."""
    ir = compile_ir(pipeline, run_id)
    total = len(ir.nodes)
    run_records.begin_run(reader, config.pipeline_name, run_id, total)
    try:
        with _watch(config.metadata, run_id, total, progress):
            if runner == Runner.BEAM:
                from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner
                BeamDagRunner().run_with_ir(ir)
            else:
                from tfx.orchestration.local.local_dag_runner import LocalDagRunner
                LocalDagRunner().run_with_ir(ir)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0] if str(exc) \
            else type(exc).__name__
        with contextlib.suppress(Exception):  # keep the run's own error, not a recording one
            run_records.finish_run(reader, run_id, run_states.FAILED, error)
        raise
    run_records.finish_run(reader, run_id, run_states.COMPLETE)


def _run_search(config: PipelineConfig, runner: Runner, progress, run_id: str,
                reader: Reader) -> dict:
    """Rounds of pipeline runs chosen by pipelines.search from what ML Metadata holds."""
    from collabopt.components.core.selection import Objective, Thresholds
    from collabopt.pipelines.metadata.read import read_leaves

    rounds = [0]

    def run_round(leaves, trace, final):
        rounds[0] += 1
        label = "final round" if final else f"round {rounds[0]}"
        round_id = run_id if final else f"{run_id}.round{rounds[0]}"
        round_progress = None if progress is None else (
            lambda done, total, last: progress(done, total, f"{label}: {last}"))
        _run_one(build(config, leaves, trace, push=final), config, runner, round_progress,
                 round_id, reader)
        return {r.path: search.Outcome(
                    r.path, r.int8_accuracy, r.accuracy_drop,
                    r.failure["message"] if r.failure else None, _objective_figure(r, objective))
                for r in read_leaves(config.metadata, run_id=round_id)}

    # More compression never makes latency or size worse, but it does make accuracy worse: only
    # the first two bound the pairs the search has not trained (pipelines.search).
    objective = Objective(config.objective)
    tolerance = None if objective == Objective.ACCURACY else config.objective_tolerance
    return search.run_search(config.all_leaves(), Thresholds(**config.thresholds.as_dict()),
                             run_round, objective_tolerance=tolerance)


def _objective_figure(record, objective) -> Optional[float]:
    """The figure the Selector ranks `record` by on the primary target (None: not measured)."""
    from collabopt.components.core.selection import LeafMetrics, objective_value

    if record.failure or not record.vela or record.int8_accuracy is None:
        return None
    vela = record.vela[0]
    value = objective_value(LeafMetrics(
        record.path, record.int8_accuracy, record.tflite_bytes or 0,
        inference_ms=vela.get("inference_ms"), flash_bytes=vela.get("flash_bytes")), objective)
    return value if math.isfinite(value) and value > 0 else None


def compile_for_kubeflow(config: PipelineConfig, out: str, image: str) -> str:
    """Writes the KFP v2 pipeline spec (JSON) whose every step runs in `image`.

    Pipeline spec 2.1: KFP 2.x's driver resolves only `runtimeValue.constant` parameters and
    hands them to the step as `ExecutorInput.inputs.parameterValues`, which TFX's entrypoint reads
    only when the step also gets `--json_serialized_inputs_spec_args` (2.1 compiles both). With
    TFX's default (2.0.0) a step would run with none of its parameters.
    """
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as kfp_v2

    if config.mode == Mode.PROGRESSIVE:
        raise ConfigError(
            "mode: progressive cannot be compiled for Kubeflow Pipelines: its gate Selectors "
            "consume the outputs of tasks a condition may skip, which KFP's backend cannot hand "
            "on. Use mode: exhaustive, with the leaves you want in `leaves`.")
    if config.mode == Mode.SEARCH:
        raise ConfigError(
            "mode: search cannot be compiled for Kubeflow Pipelines: each round is a pipeline "
            "run chosen from the previous round's results, which one compiled spec cannot "
            "express. Use mode: exhaustive with the levels to try as lists "
            "(pruning.target_sparsity: [0.5, 0.75], clustering.number_of_clusters: [16, 8]); "
            "a local `collabopt run` in mode: search tells which levels are worth listing.")
    pipeline = create_pipeline(config, metadata_connection_config=None)
    runner = kfp_v2.KubeflowV2DagRunner(
        config=kfp_v2.KubeflowV2DagRunnerConfig(default_image=image, use_pipeline_spec_2_1=True),
        output_dir=os.path.dirname(os.path.abspath(out)),
        output_filename=os.path.basename(out))
    runner.run(pipeline, write_out=True)
    return out


@contextlib.contextmanager
def _watch(metadata_uri: str, run_id: str, total: int, progress) -> Iterator[None]:
    """Polls MLMD in a thread and reports the nodes of run `run_id` as they finish."""
    if progress is None:
        yield
        return
    stop = threading.Event()
    seen: dict[str, str] = {}
    done: set[int] = set()

    def poll_once():
        try:
            reader = Reader(open_store(metadata_uri, readonly=True))
            context = reader.run(run_id)
            executions = reader.store.get_executions_by_context(context.id) if context else []
            for execution in sorted(executions, key=lambda e: e.id):
                if execution.last_known_state not in _DONE or execution.id in done:
                    continue
                done.add(execution.id)
                node = reader.node_id(execution)
                if node not in seen:  # one line per node, however many executions it has
                    seen[node] = _DONE[execution.last_known_state]
                    progress(min(len(seen), total), total, f"{node} {seen[node]}")
        except Exception:  # the store may be locked mid-write: try again at the next tick
            pass

    def poll():
        while not stop.wait(1.5):
            poll_once()

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    previous = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        absl_logging.set_verbosity(previous)
        poll_once()  # the steps that finished (or failed) since the last tick
