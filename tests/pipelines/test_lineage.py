"""`collabopt lineage`: on a hand-made ML Metadata store (fast) and on a small real run (e2e)."""
from __future__ import annotations

import contextlib
import json
import pathlib
import re
import shutil
import socket
import subprocess
import time

import pytest
from click.testing import CliRunner
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb

from collabopt.components.core.leaves import leaf_key
from collabopt.pipelines.cli import main
from collabopt.pipelines.metadata import store as mlmd
from collabopt.pipelines.metadata.lineage import NothingSelectedError, trace
from collabopt.pipelines.metadata.read import read_lineage
from collabopt.pipelines.metadata.reader import Reader
from tests.pipelines.conftest import TARGET


def expected_nodes(path: str) -> set[str]:
    """The node ids tree.py gives the components on the path of one leaf, Selector included."""
    key = leaf_key(path)
    steps = path.split(">")
    nodes = {"ImportExampleGen", "Trainer", f"TFLiteConverter_{key}",
             f"VelaCompiler_{key}_0_{TARGET.replace('-', '_')}", f"Evaluator_{key}", "Selector"}
    for i, step in enumerate(steps):
        prefix = leaf_key(">".join(steps[:i + 1]))
        if step.startswith("prune"):
            nodes.add(f"Pruner_{prefix}")
        elif step.startswith("cluster"):
            nodes.add(f"SparseClusterer_{prefix}")
        elif step != "ptq":
            nodes.add(f"PreservingQAT_{prefix}")
    return nodes


# --- a hand-made store: the shapes TFX writes, without running anything --------------------------

class FakeStore:
    """Records executions the way TFX does: pipeline / pipeline_run / node contexts, events keyed
    by the component's input and output names, executions COMPLETE or CACHED."""

    def __init__(self, path: str, pipeline: str = "my.pipe"):
        self.uri = path
        self.store = metadata_store.MetadataStore(mlmd.connection_config(path))
        self.pipeline = pipeline
        self.context_types = {name: self.store.put_context_type(pb.ContextType(name=name))
                              for name in ("pipeline", "pipeline_run", "node")}
        [self.pipeline_ctx] = self.store.put_contexts([pb.Context(
            type_id=self.context_types["pipeline"], name=pipeline)])
        self.nodes: dict[str, int] = {}
        self.run_ctx = None

    def new_run(self, name: str) -> None:
        [self.run_ctx] = self.store.put_contexts([pb.Context(
            type_id=self.context_types["pipeline_run"], name=name)])
        self.store.put_parent_contexts([pb.ParentContext(child_id=self.run_ctx,
                                                         parent_id=self.pipeline_ctx)])

    def artifact(self, type_name: str, uri: str, **props) -> pb.Artifact:
        type_id = self.store.put_artifact_type(pb.ArtifactType(name=type_name))
        artifact = pb.Artifact(type_id=type_id, uri=uri, state=pb.Artifact.LIVE)
        for key, value in props.items():
            if isinstance(value, str):
                artifact.custom_properties[key].string_value = value
            elif isinstance(value, float):
                artifact.custom_properties[key].double_value = value
            else:
                artifact.custom_properties[key].int_value = value
        return artifact

    def execute(self, node_id: str, component: str, inputs: dict[str, pb.Artifact],
                outputs: dict[str, pb.Artifact], state=pb.Execution.COMPLETE, **params) -> int:
        type_id = self.store.put_execution_type(pb.ExecutionType(name=component))
        execution = pb.Execution(type_id=type_id, last_known_state=state)
        for key, value in params.items():
            execution.custom_properties[key].string_value = str(value)
        pairs = []
        for kind, artifacts in ((pb.Event.INPUT, inputs), (pb.Event.OUTPUT, outputs)):
            for key, artifact in artifacts.items():
                event = pb.Event(type=kind)
                event.path.steps.add().key = key
                event.path.steps.add().index = 0
                pairs.append((artifact, event))
        if node_id not in self.nodes:
            [self.nodes[node_id]] = self.store.put_contexts([pb.Context(
                type_id=self.context_types["node"], name=f"{self.pipeline}.{node_id}")])
        contexts = self.store.get_contexts_by_id([self.pipeline_ctx, self.run_ctx,
                                                  self.nodes[node_id]])
        execution_id, artifact_ids, _ = self.store.put_execution(execution, pairs, contexts)
        for (artifact, _), artifact_id in zip(pairs, artifact_ids):
            artifact.id = artifact_id
        return execution_id


def _two_runs(tmp_path, selected_path: str, uri: str | None = None):
    """Run 1 computes examples -> base -> pruned -> evaluations; run 2 reuses all from the cache
    and reruns only the Selector."""
    fake = FakeStore(uri or str(tmp_path / "mlmd.sqlite"))
    fake.new_run("run-1")
    examples = fake.artifact("Examples", "/root/examples")
    fake.execute("ImportExampleGen", "tfx.components.ImportExampleGen", {}, {"examples": examples},
                 input_base="/data")
    base = fake.artifact("Model", "/root/base")
    fake.execute("Trainer", "tfx.components.Trainer", {"examples": examples}, {"model": base})
    pruned = fake.artifact("Model", "/root/pruned", technique_path="prune", sparsity=0.5)
    fake.execute("Pruner_prune", "collabopt.components.pruner.component.Pruner",
                 {"model": base, "examples": examples}, {"optimized_model": pruned},
                 target_sparsity=0.5)
    ptq_eval = fake.artifact("ModelEvaluation", "/root/ptq_eval", technique_path="ptq")
    fake.execute("Evaluator_ptq", "collabopt.components.evaluator.component.Evaluator",
                 {"model": base}, {"evaluation": ptq_eval})
    pruned_eval = fake.artifact("ModelEvaluation", "/root/pruned_eval", technique_path="prune>ptq")
    fake.execute("Evaluator_prune_ptq", "collabopt.components.evaluator.component.Evaluator",
                 {"model": pruned, "baseline_evaluation": ptq_eval}, {"evaluation": pruned_eval})

    fake.new_run("run-2")
    for node_id, component, ins, outs in [
            ("ImportExampleGen", "tfx.components.ImportExampleGen", {}, {"examples": examples}),
            ("Trainer", "tfx.components.Trainer", {"examples": examples}, {"model": base}),
            ("Pruner_prune", "collabopt.components.pruner.component.Pruner",
             {"model": base, "examples": examples}, {"optimized_model": pruned})]:
        fake.execute(node_id, component, ins, outs, state=pb.Execution.CACHED)
    chosen = fake.artifact("Model", "/root/selected", selected_path=selected_path,
                           closest_path="" if selected_path else "prune>ptq",
                           explanation=("Selected prune>ptq." if selected_path else
                                        "No leaf meets the thresholds; closest is prune>ptq: "
                                        "int8_accuracy 0.8 is below min_accuracy=0.9."))
    fake.execute("Selector", "collabopt.components.selector.component.Selector",
                 {"ptq": ptq_eval, "prune_ptq": pruned_eval}, {"model": chosen})
    return fake, dict(examples=examples, base=base, pruned=pruned, ptq_eval=ptq_eval,
                      pruned_eval=pruned_eval, chosen=chosen)


def test_lineage_follows_the_complete_producer_past_cached_executions(tmp_path):
    fake, a = _two_runs(tmp_path, "prune>ptq")
    lineage = read_lineage(fake.uri, selected=True)
    assert lineage.root == a["chosen"].id
    assert lineage.node_ids()[0] == "Selector"
    # Node ids come from the "node" contexts ("<pipeline>.<node_id>"; the pipeline name has a dot).
    assert set(lineage.node_ids()) == {"Selector", "Evaluator_prune_ptq", "Pruner_prune", "Trainer",
                                       "ImportExampleGen"}
    assert {e.state for e in lineage.executions.values()} == {"COMPLETE"}
    pruned = lineage.artifacts[a["pruned"].id]
    assert pruned.cached_by and pruned.produced_by not in pruned.cached_by
    assert [x.id for x in lineage.chain()] == [a["chosen"].id, a["pruned_eval"].id,
                                               a["pruned"].id, a["base"].id]
    assert lineage.executions[pruned.produced_by].parameters == {"target_sparsity": "0.5"}


def test_side_inputs_are_listed_not_expanded_unless_full(tmp_path):
    fake, a = _two_runs(tmp_path, "prune>ptq")
    lineage = trace(Reader(fake.store), a["chosen"].id)
    selector = next(e for e in lineage.executions.values() if e.node_id == "Selector")
    assert {(i.key, i.followed) for i in selector.inputs} == {("ptq", False), ("prune_ptq", True)}
    assert "Evaluator_ptq" not in lineage.node_ids()
    assert a["ptq_eval"].id in lineage.artifacts   # listed, as a side input
    full = trace(Reader(fake.store), a["chosen"].id, full=True)
    assert "Evaluator_ptq" in full.node_ids()


def test_selected_without_a_selection_says_so_with_a_hint(tmp_path):
    fake, _ = _two_runs(tmp_path, "")
    with pytest.raises(NothingSelectedError, match="closest is prune>ptq.*the closest leaf 'prune>ptq'"):
        read_lineage(fake.uri, selected=True)
    result = CliRunner().invoke(main, ["lineage", "--metadata", fake.uri, "--selected"])
    assert result.exit_code == 2
    assert "No leaf was selected" in result.output and "collabopt leaves" in result.output


def test_lineage_cli_arguments(tmp_path):
    fake, _ = _two_runs(tmp_path, "prune>ptq")
    runner = CliRunner()
    assert runner.invoke(main, ["lineage", "--metadata", fake.uri]).exit_code == 2
    missing = runner.invoke(main, ["lineage", "--metadata", fake.uri, "12345"])
    assert missing.exit_code == 2 and "No artifact #12345" in missing.output
    absent = runner.invoke(main, ["lineage", "--metadata", str(tmp_path / "nope.sqlite"), "1"])
    assert absent.exit_code == 2 and "No ML Metadata store" in absent.output


# --- MySQL (a Kubeflow cluster's store), when a MariaDB server binary is installed ---------------

MARIADBD = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")
INSTALL_DB = shutil.which("mariadb-install-db")


@contextlib.contextmanager
def mariadb_server(workdir: pathlib.Path):
    """A throw-away MariaDB server on 127.0.0.1 (no grant tables: any user, any password);
    yields its port."""
    if not (MARIADBD and INSTALL_DB):
        pytest.skip("no MariaDB server binary (apt-get install mariadb-server)")
    data = workdir / "mysql"
    subprocess.run([INSTALL_DB, "--no-defaults", f"--datadir={data}", "--user=root",
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, capture_output=True, timeout=120)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(workdir / "mysql.log", "w")
    server = subprocess.Popen(
        [MARIADBD, "--no-defaults", f"--datadir={data}", "--user=root", f"--port={port}",
         "--bind-address=127.0.0.1", f"--socket={workdir / 'mysql.sock'}",
         f"--pid-file={workdir / 'mysql.pid'}", "--skip-grant-tables", "--skip-log-bin",
         "--innodb-buffer-pool-size=32M"], stdout=log, stderr=log)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail("MariaDB did not start: " + (workdir / "mysql.log").read_text())
                time.sleep(0.3)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


@pytest.fixture
def mysql_uri(tmp_path):
    with mariadb_server(tmp_path) as port:
        yield f"mysql://root@127.0.0.1:{port}/collabopt_mlmd"


def test_lineage_reads_a_mysql_store(tmp_path, mysql_uri):
    fake, a = _two_runs(tmp_path, "prune>ptq", uri=mysql_uri)
    lineage = read_lineage(mysql_uri, selected=True)
    assert lineage.root == a["chosen"].id
    assert set(lineage.node_ids()) == {"Selector", "Evaluator_prune_ptq", "Pruner_prune",
                                       "Trainer", "ImportExampleGen"}
    result = CliRunner().invoke(main, ["lineage", "--metadata", mysql_uri, "--selected", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["root"] == a["chosen"].id


# --- a real run ----------------------------------------------------------------------------------

def _leaves(small_run):
    from collabopt.pipelines.metadata.read import read_leaves

    return {r.path: r for r in read_leaves(small_run.metadata)}


@pytest.mark.e2e
def test_selected_lineage_is_the_chain_of_the_selected_leaf(small_run):
    lineage = read_lineage(small_run.metadata, selected=True)
    root = lineage.artifacts[lineage.root]
    selected = root.properties["selected_path"]
    assert root.type == "Model" and selected in _leaves(small_run)
    assert set(lineage.node_ids()) == expected_nodes(selected)
    # The base model and the Examples are reached, through the executions that computed them.
    examples = lineage.artifacts_of_type("Examples")
    assert len(examples) == 1
    assert lineage.executions[examples[0].produced_by].node_id == "ImportExampleGen"
    base = lineage.chain()[-1]
    assert base.type == "Model" and lineage.executions[base.produced_by].node_id == "Trainer"


@pytest.mark.e2e
def test_pcqat_leaf_lineage_reaches_the_base_model_through_every_step(small_run):
    leaf = _leaves(small_run)["prune50>cluster16>pcqat"]
    lineage = read_lineage(small_run.metadata, leaf.tflite_id)
    downstream = {"Selector", "Evaluator_prune50_cluster16_pcqat",
                  f"VelaCompiler_prune50_cluster16_pcqat_0_{TARGET.replace('-', '_')}"}
    assert set(lineage.node_ids()) == expected_nodes("prune50>cluster16>pcqat") - downstream
    chain = lineage.chain()
    assert [a.properties.get("technique_path") for a in chain] == [
        "prune50>cluster16>pcqat", "prune50>cluster16>pcqat", "prune50>cluster16", "prune50", None]
    assert chain[2].properties["sparsity"] > 0.3      # measured by the clusterer, sparsity kept
    from_eval = read_lineage(small_run.metadata, leaf.evaluation_id)
    assert set(from_eval.node_ids()) == expected_nodes("prune50>cluster16>pcqat") - {"Selector"}
    evaluator = from_eval.executions[from_eval.artifacts[leaf.evaluation_id].produced_by]
    baseline = [i for i in evaluator.inputs if i.key == "baseline_evaluation"]
    assert len(baseline) == 1 and not baseline[0].followed
    assert from_eval.artifacts[baseline[0].artifact_id].properties["technique_path"] == "ptq"
    full = read_lineage(small_run.metadata, leaf.evaluation_id, full=True)
    assert "Evaluator_ptq" in full.node_ids()


@pytest.mark.e2e
def test_lineage_of_a_rerun_reaches_the_first_run_through_cached_executions(small_run):
    reader = Reader(mlmd.open_store(small_run.metadata))
    assert reader.runs()[-1].name != small_run.first_run_id
    lineage = read_lineage(small_run.metadata, selected=True)
    # The second run was all cache hits: the walk followed the first run's COMPLETE executions.
    assert {e.state for e in lineage.executions.values()} == {"COMPLETE"}
    produced = [a for a in lineage.artifacts.values() if a.produced_by is not None]
    assert produced and all(a.cached_by for a in produced)


@pytest.mark.e2e
def test_lineage_cli_json_structure(small_run):
    result = CliRunner().invoke(main, ["lineage", "--metadata", small_run.metadata, "--selected",
                                       "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"metadata", "run", "root", "node_ids", "artifacts", "executions"}
    artifacts = {a["id"]: a for a in data["artifacts"]}
    assert data["root"] in artifacts
    for a in data["artifacts"]:
        assert set(a) >= {"id", "type", "uri", "state", "properties", "produced_by", "cached_by"}
        assert a["produced_by"] is None or a["produced_by"] in {e["id"] for e in data["executions"]}
    for e in data["executions"]:
        assert set(e) >= {"id", "node_id", "component", "state", "parameters", "create_time",
                          "last_update_time", "inputs", "outputs"}
        for ref in e["inputs"]:
            assert ref["artifact_id"] in artifacts
    pruner = next((e for e in data["executions"] if e["node_id"] == "Pruner_prune"), None)
    if pruner is not None:
        assert pruner["parameters"]["target_sparsity"] == pytest.approx(0.5)
        assert pruner["component"].endswith("Pruner")


@pytest.mark.e2e
def test_lineage_cli_tree(small_run):
    leaf = _leaves(small_run)["prune50>cluster16>pcqat"]
    result = CliRunner().invoke(main, ["lineage", "--metadata", small_run.metadata,
                                       str(leaf.evaluation_id)])
    assert result.exit_code == 0, result.output
    text = re.sub(r"\s+", " ", result.output)
    for node in expected_nodes("prune50>cluster16>pcqat") - {"Selector"}:
        assert node in text
    assert "side input" in text and "Examples" in text
