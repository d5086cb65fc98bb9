"""`collabopt runs`, `leaves`, `lineage` and `report` on a store in KFP v2's layout, without
containers (fast: no image, no training).

The store is written by the harness's `write_kfp_metadata` from a recorded run: `data/kfp_run.json`
is what every step of the compiled small demo reported when `test_kfp_in_image.py` ran it in the
image (the ExecutorOutput metadata the launcher records, the artifact ids the driver passed on, the
task parameters), saved by running that test with
`COLLABOPT_RECORD_KFP_RUN=tests/container/data/kfp_run.json`. Recorded rather than re-run: running
the steps takes the image (or, on the host, a whole pipeline run with every mounted path
rewritten). Nothing here is constructed by hand, and what the readers must show is read from the
recording itself: each Evaluator's, converter's and Vela step's reported figures, the Selector's
choice, the tasks' inputs and parameters. The container test compares the same readers with a
local run of the same config. Re-record when the components change what they report.
"""
from __future__ import annotations

import json
import os

import pytest
from ml_metadata.proto import metadata_store_pb2 as mlmd_pb

from collabopt.components import types as t
from collabopt.pipelines.metadata import layout as layouts
from tests.container import kfp_harness
from tests.pipelines.cli_process import Result
from tests.pipelines.test_lineage import expected_nodes

RECORDING = os.path.join(os.path.dirname(__file__), "data", "kfp_run.json")


def _config(path: str) -> mlmd_pb.ConnectionConfig:
    config = mlmd_pb.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = mlmd_pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return config


def _run(run_id: str) -> kfp_harness.PipelineRun:
    with open(RECORDING) as f:
        data = json.load(f)
    return kfp_harness.PipelineRun.from_json({**data, "run_id": run_id})


def _reported(run: kfp_harness.PipelineRun, task_prefix: str, key: str) -> dict[str, dict]:
    """What the tasks named `<task_prefix>…` reported for output `key`, by technique path."""
    found = {}
    for task in run.tasks:
        if task.task.startswith(task_prefix):
            props = task.outputs[key].properties()
            found[props[t.TECHNIQUE_PATH]] = props
    return found


@pytest.fixture(scope="module")
def recorded() -> kfp_harness.PipelineRun:
    return _run("kfp-recorded")


@pytest.fixture(scope="module")
def kfp_store(recorded, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("kfp-store") / "kfp-metadata.sqlite")
    kfp_harness.write_kfp_metadata(recorded, _config(path))
    return path


@pytest.fixture(scope="module")
def selected_path(recorded) -> str:
    path = recorded.task("Selector").outputs["blessing"].properties()[t.SELECTED_PATH]
    assert path, "the recorded run selected no leaf: re-record it with thresholds a leaf meets"
    return path


def _cli(*args: str) -> Result:
    """The CLI in this process (test_kfp_in_image.py runs it as real processes)."""
    from click.testing import CliRunner

    from collabopt.pipelines.cli import main

    result = CliRunner().invoke(main, list(args))
    return Result(result.exit_code, result.stdout, result.stderr)


def _json(*args: str):
    result = _cli(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result


# --- the layout --------------------------------------------------------------------------------

def test_the_layout_is_read_from_what_the_store_holds(kfp_store, tmp_path):
    from ml_metadata.metadata_store import metadata_store

    from collabopt.pipelines.metadata.read import open_reader

    assert open_reader(kfp_store).layout is layouts.KFP_V2
    tfx_path = str(tmp_path / "tfx.sqlite")
    store = metadata_store.MetadataStore(_config(tfx_path))
    assert open_reader(tfx_path).layout is layouts.TFX_LOCAL  # empty: TFX's, the embedded default
    type_id = store.put_context_type(mlmd_pb.ContextType(name="pipeline_run"))
    store.put_contexts([mlmd_pb.Context(type_id=type_id, name="run-1")])
    assert open_reader(tfx_path).layout is layouts.TFX_LOCAL


def test_kfp_values_read_in_tfx_kinds():
    """converter.go stores every number as a double and wraps lists and structs."""
    value = layouts.KFP_V2.value
    assert value(mlmd_pb.Value(double_value=3.0)) == mlmd_pb.Value(int_value=3)
    assert value(mlmd_pb.Value(double_value=0.25)) == mlmd_pb.Value(double_value=0.25)
    assert value(mlmd_pb.Value(double_value=2.0 ** 60)) == mlmd_pb.Value(double_value=2.0 ** 60)
    wrapped = mlmd_pb.Value()
    wrapped.struct_value.update({"list": ["a", 1]})
    assert value(wrapped) == mlmd_pb.Value(string_value='["a", 1.0]')
    assert value(mlmd_pb.Value(string_value="x")) == mlmd_pb.Value(string_value="x")


# --- leaves ------------------------------------------------------------------------------------

def test_leaves_show_what_the_steps_reported(kfp_store, recorded, selected_path):
    leaves, result = _json("leaves", "--metadata", kfp_store, "--json")
    assert result.err_lines[0].startswith(f"Leaves of run {recorded.run_id} of "
                                          f"{recorded.pipeline_name} (complete")
    evaluations = _reported(recorded, "Evaluator_", "evaluation")
    tflites = _reported(recorded, "TFLiteConverter_", "tflite_model")
    velas = _reported(recorded, "VelaCompiler_", "vela_model")
    assert {leaf["path"] for leaf in leaves} == set(evaluations) and len(leaves) == 2
    for leaf in leaves:
        path = leaf["path"]
        assert leaf["int8_accuracy"] == pytest.approx(evaluations[path][t.INT8_ACCURACY])
        assert leaf["blessed"] == bool(evaluations[path][t.BLESSED])
        assert leaf["selected"] == (path == selected_path)
        # Byte counts, cycles and operator counts were ints before KFP made them doubles.
        assert leaf["tflite_bytes"] == tflites[path][t.TFLITE_BYTES]
        assert isinstance(leaf["tflite_bytes"], int) and isinstance(leaf["gzip_bytes"], int)
        (vela,) = leaf["vela"]
        assert vela[t.CYCLES] == velas[path][t.CYCLES] and isinstance(vela[t.CYCLES], int)
        assert vela[t.INFERENCE_MS] == pytest.approx(velas[path][t.INFERENCE_MS])
        assert isinstance(vela[t.NPU_OPS], int) and vela[t.TARGET] == velas[path][t.TARGET]
        assert leaf["uri"] == recorded.task(f"TFLiteConverter_{_key(path)}").outputs[
            "tflite_model"].uri and leaf["uri"].startswith("gs://")
    table = _cli("leaves", "--metadata", kfp_store)
    assert table.returncode == 0, table.stderr
    assert selected_path in table.stdout and "SELECTED" in table.stdout


def _key(path: str) -> str:
    from collabopt.components.core.leaves import leaf_key

    return leaf_key(path)


# --- lineage -----------------------------------------------------------------------------------

def test_lineage_of_the_selected_model_follows_the_recorded_tasks(kfp_store, recorded,
                                                                   selected_path):
    lineage, _ = _json("lineage", "--metadata", kfp_store, "--selected", "--json")
    assert lineage["run"] == recorded.run_id
    artifacts = {a["id"]: a for a in lineage["artifacts"]}
    root = artifacts[lineage["root"]]
    assert root["type"] == "Model" and root["properties"][t.SELECTED_PATH] == selected_path
    assert root["uri"] == recorded.task("Selector").outputs["model"].uri
    assert set(lineage["node_ids"]) == expected_nodes(selected_path)
    for execution in lineage["executions"]:
        task = recorded.task(execution["node_id"])
        assert execution["component"] == task.execution_type
        assert execution["state"] == "COMPLETE"
        # The task's parameters as the driver recorded them (whole numbers back as ints).
        assert execution["parameters"] == {
            k: int(v) if isinstance(v, float) and v.is_integer() else v
            for k, v in task.parameters.items()}
        # Inputs: the artifacts the driver passed to the task, under their keys.
        inputs = {(i["key"], artifacts[i["artifact_id"]]["uri"]) for i in execution["inputs"]}
        recorded_inputs = {(key, a.uri) for key, ids in task.inputs.items() for a in
                           recorded.artifacts() if a.id in ids}
        assert inputs == recorded_inputs, execution["node_id"]
    tree = _cli("lineage", "--metadata", kfp_store, "--selected")
    assert tree.returncode == 0, tree.stderr
    assert "Selector" in tree.stdout and "ContainerExecution" in tree.stdout


def test_lineage_chain_of_a_leaf_reaches_the_base_model(kfp_store, selected_path):
    from collabopt.pipelines.metadata.read import read_leaves, read_lineage

    leaf = {r.path: r for r in read_leaves(kfp_store)}[selected_path]
    chain = read_lineage(kfp_store, leaf.tflite_id).chain()
    steps = [s for s in selected_path.split(">") if s != "ptq"]
    assert [a.type for a in chain] == [t.TFLiteModel.TYPE_NAME] + ["Model"] * (len(steps) + 1)
    paths = [a.properties.get(t.TECHNIQUE_PATH) for a in chain]
    assert paths[0] == selected_path
    assert paths[1:-1] == [">".join(steps[:i]) for i in range(len(steps), 0, -1)]


# --- runs: a complete, a failed and a running run ------------------------------------------------

@pytest.fixture(scope="module")
def history(tmp_path_factory, recorded) -> tuple[str, str, str]:
    """One store: the recorded run, the same run failing at its first Evaluator, then one whose
    Selector is still running."""
    path = str(tmp_path_factory.mktemp("kfp-history") / "kfp-metadata.sqlite")
    evaluator = next(task.task for task in recorded.tasks if task.task.startswith("Evaluator_"))
    kfp_harness.write_kfp_metadata(_run("good"), _config(path))
    kfp_harness.write_kfp_metadata(_run("bad"), _config(path),
                                   end=(evaluator, mlmd_pb.Execution.FAILED))
    kfp_harness.write_kfp_metadata(_run("busy"), _config(path),
                                   end=("Selector", mlmd_pb.Execution.RUNNING))
    return path, evaluator, "Selector"


def test_runs_show_state_from_the_steps(history, recorded, selected_path):
    path, evaluator, running = history
    runs, _ = _json("runs", "--metadata", path, "--json")
    by_id = {run["run_id"]: run for run in runs}
    assert [run["run_id"] for run in runs] == ["good", "bad", "busy"]
    good, bad, busy = by_id["good"], by_id["bad"], by_id["busy"]
    assert good["state"] == "complete" and good["error"] is None
    assert good["selected"] == selected_path and good["leaves"] == 2
    assert good["executions"] == len(recorded.tasks)
    assert good["pipeline"] == recorded.pipeline_name and good["owner"] is None
    assert bad["state"] == "failed" and bad["error"].startswith(f"{evaluator} failed: KFP records")
    assert bad["selected"] is None
    assert busy["state"] == "running" and "KFP UI" in busy["error"] and busy["orphans"] == []
    assert busy["leaves"] == 2 and busy["selected"] is None  # every Evaluator, not the Selector


def test_readers_show_the_latest_run_with_leaves_and_say_why(history, selected_path):
    path, _, _ = history
    leaves = _cli("leaves", "--metadata", path)
    assert leaves.returncode == 0, leaves.stderr
    assert leaves.err_lines[0].startswith("Leaves of run busy")
    assert "Run busy is running." in leaves.stderr
    explicit, _ = _json("leaves", "--metadata", path, "--run-id", "good", "--json")
    assert [leaf["path"] for leaf in explicit if leaf["selected"]] == [selected_path]
    no_selection = _cli("lineage", "--metadata", path, "--selected")
    assert no_selection.returncode != 0 and "has no Selector output" in no_selection.stderr


# --- report ------------------------------------------------------------------------------------

def test_report_of_a_kfp_run(kfp_store, recorded, selected_path, tmp_path):
    from tests.pipelines.test_report import _parse

    out = tmp_path / "report"
    result = _cli("report", "--metadata", kfp_store, "--out", str(out))
    assert result.returncode == 0, result.stderr
    page = _parse(str(out / "index.html"))
    leaves = [row[0] for row in page.tables["leaves"][1:] if row and row[0]]
    assert sorted(leaves) == sorted(_reported(recorded, "Evaluator_", "evaluation"))
    assert [row[0] for row in page.tables["leaves"] if row and row[-1] == "SELECTED"] == [
        selected_path]
    lineage_nodes = [row[0].split()[0] for row in page.tables["lineage"][1:]]
    assert set(lineage_nodes) == expected_nodes(selected_path)
    # The models live in a bucket this machine cannot reach: the page says so instead of the plot.
    assert "weights.png" not in page.images
    with open(out / "index.html", encoding="utf-8") as f:
        assert "could not load a model of the path" in f.read()
