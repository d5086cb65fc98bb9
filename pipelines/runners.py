"""Runs the deployment-tree pipeline locally (LocalDagRunner or BeamDagRunner) or compiles it for
Kubeflow Pipelines v2. `tree.create_pipeline` knows nothing of runners; these wrap it."""
from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Iterator, Optional

from absl import logging as absl_logging
from ml_metadata.proto import metadata_store_pb2
from tfx.dsl.io import fileio
from tfx.orchestration import pipeline as pipeline_lib

from collabopt.components.core.errors import ConfigError
from collabopt.components.core.leaves import Leaf
from collabopt.pipelines import mlmd, search
from collabopt.pipelines.config import Mode, PipelineConfig, Runner, check_local_inputs
from collabopt.pipelines.tree import create_pipeline

_DONE = {metadata_store_pb2.Execution.COMPLETE: "done", metadata_store_pb2.Execution.CACHED: "cached",
         metadata_store_pb2.Execution.FAILED: "failed", metadata_store_pb2.Execution.CANCELED: "skipped"}


def build(config: PipelineConfig, leaves: Optional[list[Leaf]] = None,
          search_trace: Optional[str] = None, push: bool = True) -> pipeline_lib.Pipeline:
    metadata_dir = os.path.dirname(config.metadata)
    if "://" not in config.metadata and metadata_dir:
        fileio.makedirs(metadata_dir)
    return create_pipeline(config, mlmd.connection_config(config.metadata), leaves=leaves,
                           search_trace=search_trace, push=push)


def run(config: PipelineConfig, runner: Optional[Runner | str] = None,
        progress=None) -> Optional[dict]:
    """Runs the pipeline to completion; `progress(done, total, last_node)` is called as nodes
    finish. `mode: search` runs several rounds and returns the search trace."""
    runner = Runner(runner or config.runner)
    check_local_inputs(config)
    if config.mode == Mode.SEARCH:
        return _run_search(config, runner, progress)
    _run_pipeline(build(config), config, runner, progress)
    return None


def _run_pipeline(pipeline: pipeline_lib.Pipeline, config: PipelineConfig, runner: Runner,
                  progress) -> None:
    total = len(pipeline.components)
    with _watch(config.metadata, config.pipeline_name, total, progress):
        if runner == Runner.BEAM:
            from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner
            BeamDagRunner().run(pipeline)
        else:
            from tfx.orchestration.local.local_dag_runner import LocalDagRunner
            LocalDagRunner().run(pipeline)


def _run_search(config: PipelineConfig, runner: Runner, progress) -> dict:
    """Rounds of pipeline runs chosen by pipelines.search from what ML Metadata holds."""
    from collabopt.components.core.selection import Thresholds
    from collabopt.pipelines.leaves import read_leaves

    rounds = [0]

    def run_round(leaves, trace, final):
        rounds[0] += 1
        label = "final round" if final else f"round {rounds[0]}"
        round_progress = None if progress is None else (
            lambda done, total, last: progress(done, total, f"{label}: {last}"))
        _run_pipeline(build(config, leaves, trace, push=final), config, runner, round_progress)
        return {r.path: search.Outcome(
                    r.path, r.int8_accuracy, r.accuracy_drop,
                    r.failure["message"] if r.failure else None)
                for r in read_leaves(config.metadata)}

    return search.run_search(config.all_leaves(), Thresholds(**config.thresholds.as_dict()),
                             run_round)


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


def _node_id(store, execution_id: int, pipeline_name: str) -> Optional[str]:
    """The pipeline node that ran an execution, from its `node` context (`<pipeline>.<node>`)."""
    for context in store.get_contexts_by_execution(execution_id):
        if context.name.startswith(pipeline_name + "."):
            return context.name[len(pipeline_name) + 1:]
    return None


@contextlib.contextmanager
def _watch(metadata_uri: str, pipeline_name: str, total: int, progress) -> Iterator[None]:
    """Polls MLMD in a thread and reports executions finished since the run started."""
    if progress is None or "://" in metadata_uri:
        yield
        return
    started_ms = int(time.time() * 1000)
    stop = threading.Event()

    def poll():
        seen: set[int] = set()
        while not stop.wait(1.5):
            try:
                store = mlmd.open_store(metadata_uri, must_exist=True)
                executions = store.get_executions()
            except Exception:  # the store may not exist yet, or be locked mid-write
                continue
            for execution in executions:
                if execution.id in seen or execution.create_time_since_epoch < started_ms:
                    continue
                if execution.last_known_state in _DONE:
                    seen.add(execution.id)
                    name = _node_id(store, execution.id, pipeline_name) or execution.name
                    progress(len(seen), total, f"{name} {_DONE[execution.last_known_state]}")

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
