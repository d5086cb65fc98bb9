"""pipelines/kfp_submit.py without a cluster: argument parsing, package conversion, a closed port,
and a full upload-and-run against a stand-in KFP API on 127.0.0.1 driven by the real kfp client."""
from __future__ import annotations

import contextlib
import copy
import http.server
import json
import re
import socket
import threading
import time

import pytest
import yaml
from click.testing import CliRunner

from collabopt.pipelines import kfp_submit
from collabopt.pipelines.kfp_submit import SubmitError

# The shape KubeflowV2DagRunner (TFX 1.16) writes for `--out pipeline.json`: a PipelineJob with
# an Importer step (run by KFP's launcher) and one container step (run by our image).
TFX_PIPELINE_JOB = {
    "displayName": "collabopt-digits",
    "labels": {"tfx_py_version": "3-10", "tfx_runner": "kubeflow_v2", "tfx_version": "1-16-0"},
    "pipelineSpec": {
        "pipelineInfo": {"name": "collabopt-digits"},
        "schemaVersion": "2.0.0",
        "sdkVersion": "tfx-1.16.0",
        "components": {
            "examples_importer": {
                "executorLabel": "examples_importer_executor",
                "inputDefinitions": {"parameters": {"artifact_uri": {"parameterType": "STRING"}}},
                "outputDefinitions": {"artifacts": {"result": {"artifactType": {
                    "instanceSchema": "title: tfx.Examples\ntype: object\n"}}}},
            },
            "Pruner": {
                "executorLabel": "Pruner_executor",
                "inputDefinitions": {"artifacts": {"examples": {"artifactType": {
                    "instanceSchema": "title: tfx.Examples\ntype: object\n"}}}},
            },
        },
        "deploymentSpec": {"executors": {
            "examples_importer_executor": {"importer": {
                "artifactUri": {"constantValue": {"stringValue": "s3://mlpipeline/examples"}},
                "typeSchema": {"instanceSchema": "title: tfx.Examples\ntype: object\n"}}},
            "Pruner_executor": {"container": {
                "image": "registry.example.com/collabopt:dev",
                "command": ["python", "-m",
                            "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"],
                "args": ["--executor_class_path", "collabopt.components.pruner.executor.Executor",
                         "--json_serialized_invocation_args", "{{$}}"]}},
        }},
        "root": {"dag": {"tasks": {
            "examples_importer": {
                "componentRef": {"name": "examples_importer"},
                "taskInfo": {"name": "examples_importer"},
                "inputs": {"parameters": {"artifact_uri": {"runtimeValue": {
                    "constantValue": {"stringValue": "s3://mlpipeline/examples"}}}}}},
            "Pruner": {
                "componentRef": {"name": "Pruner"},
                "taskInfo": {"name": "Pruner"},
                "dependentTasks": ["examples_importer"],
                "inputs": {"artifacts": {"examples": {"taskOutputArtifact": {
                    "producerTask": "examples_importer", "outputArtifactKey": "result"}}}}},
        }}},
    },
    "runtimeConfig": {"gcsOutputDirectory": "s3://mlpipeline/collabopt/pipeline_root",
                      "parameters": {"epochs": {"intValue": "2"}}},
}


@pytest.fixture
def package(tmp_path):
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(TFX_PIPELINE_JOB))
    return str(path)


@pytest.fixture
def closed_port():
    """A loopback port that refuses connections: bound (so nothing else takes it), never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def invoke(*args: str):
    return CliRunner().invoke(kfp_submit.main, list(args), catch_exceptions=False)


# --------------------------------------------------------------------------- arguments
def test_host_package_and_experiment_are_required(package):
    result = invoke("--package", package, "--experiment", "e")
    assert result.exit_code == 2
    assert "Missing option '--host'" in result.output


def test_host_needs_a_scheme(package):
    result = invoke("--host", "ml-pipeline.kubeflow:8888", "--package", package, "--experiment", "e")
    assert result.exit_code == 2
    assert "must start with http:// or https://" in result.output


def test_missing_package_is_a_usage_error(tmp_path):
    result = invoke("--host", "http://127.0.0.1:1", "--package", str(tmp_path / "nope.json"),
                    "--experiment", "e")
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_every_documented_option_parses(package):
    ctx = kfp_submit.main.make_context("kfp-submit", [
        "--host", "http://ml-pipeline.kubeflow:8888/", "--package", package, "--experiment", "e",
        "--run-name", "r", "--namespace", "ns", "--pipeline-root", "gs://b/root",
        "--env", "S3_USE_HTTPS=0", "--secret-env", "AWS_ACCESS_KEY_ID=minio:accesskey",
        "--service-account", "sa", "--no-upload", "--wait", "--wait-timeout", "60",
        "--connect-timeout", "2"])
    p = ctx.params
    assert p["host"] == "http://ml-pipeline.kubeflow:8888"
    assert (p["run_name"], p["namespace"], p["pipeline_root"]) == ("r", "ns", "gs://b/root")
    assert (p["upload"], p["wait"], p["wait_timeout"], p["connect_timeout"]) == (False, True, 60, 2)
    assert kfp_submit.parse_env(p["env"]) == {"S3_USE_HTTPS": "0"}
    assert kfp_submit.parse_secret_env(p["secret_env"]) == {"AWS_ACCESS_KEY_ID": ("minio", "accesskey")}


def test_host_can_come_from_kf_pipelines_endpoint(package, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", "http://10.0.0.1:8888")
    ctx = kfp_submit.main.make_context("kfp-submit", ["--package", package, "--experiment", "e"])
    assert ctx.params["host"] == "http://10.0.0.1:8888"


@pytest.mark.parametrize("option, value", [
    ("--env", "NOEQUALS"), ("--env", "1BAD=x"),
    ("--secret-env", "VAR=secret-without-key"), ("--secret-env", "VAR=:key")])
def test_malformed_env_options_are_usage_errors(package, option, value):
    result = invoke("--host", "http://127.0.0.1:1", "--package", package, "--experiment", "e",
                    option, value)
    assert result.exit_code == 2
    assert option in result.output


# --------------------------------------------------------------------------- packages
def test_tfx_pipeline_job_becomes_a_spec_the_kfp_client_accepts(package, tmp_path):
    from kfp.client.client import _extract_pipeline_yaml

    pkg = kfp_submit.load_package(package)
    assert pkg.pipeline_root == "s3://mlpipeline/collabopt/pipeline_root"
    assert pkg.parameters == {"epochs": 2}
    kfp_submit.add_environment(pkg, {"S3_ENDPOINT": "minio-service.kubeflow:9000"},
                               {"AWS_ACCESS_KEY_ID": ("mlpipeline-minio-artifact", "accesskey")})
    doc = _extract_pipeline_yaml(kfp_submit.write_yaml(pkg, str(tmp_path)))
    assert doc.pipeline_spec.pipeline_info.name == "collabopt-digits"
    executors = doc.pipeline_spec.deployment_spec["executors"]
    env = executors["Pruner_executor"]["container"]["env"]
    assert [dict(e) for e in env] == [{"name": "S3_ENDPOINT", "value": "minio-service.kubeflow:9000"}]
    assert "env" not in executors["examples_importer_executor"]["importer"]
    k8s = doc.platform_spec.platforms["kubernetes"].deployment_spec.executors
    assert set(k8s) == {"Pruner_executor"}
    secret = k8s["Pruner_executor"]["secretAsEnv"][0]
    assert secret["secretName"] == "mlpipeline-minio-artifact"
    assert dict(secret["keyToEnv"][0]) == {"secretKey": "accesskey", "envVar": "AWS_ACCESS_KEY_ID"}


def test_spec_yaml_package_is_read_as_is(tmp_path):
    path = tmp_path / "spec.yaml"
    spec = copy.deepcopy(TFX_PIPELINE_JOB["pipelineSpec"])
    spec["defaultPipelineRoot"] = "gs://b/root"
    path.write_text(yaml.safe_dump(spec))
    pkg = kfp_submit.load_package(str(path))
    assert (pkg.name, pkg.pipeline_root, pkg.platform_spec) == ("collabopt-digits", "gs://b/root", None)


def test_a_json_that_is_no_pipeline_is_rejected(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"pipeline_root": "gs://b"}))
    with pytest.raises(SubmitError, match=r"not a Kubeflow pipeline.*collabopt compile --out"):
        kfp_submit.load_package(str(path))


def test_a_spec_with_unknown_fields_is_rejected(tmp_path):
    job = copy.deepcopy(TFX_PIPELINE_JOB)
    job["pipelineSpec"]["root"]["dag"]["tasks"]["Pruner"]["dependantTasks"] = ["examples_importer"]
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(job))
    with pytest.raises(SubmitError, match="not a valid Kubeflow pipeline spec"):
        kfp_submit.load_package(str(path))


def test_resolver_steps_are_rejected_before_upload(tmp_path):
    job = copy.deepcopy(TFX_PIPELINE_JOB)
    job["pipelineSpec"]["deploymentSpec"]["executors"]["latest_model_resolver_executor"] = {
        "resolver": {"outputArtifactQueries": {}}}
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(job))
    with pytest.raises(SubmitError, match="latest_model_resolver_executor.*resolver executors"):
        kfp_submit.load_package(str(path))


# --------------------------------------------------------------------------- no cluster
def test_closed_port_fails_fast_with_a_clear_error(package, closed_port):
    host = f"http://127.0.0.1:{closed_port}"
    start = time.monotonic()
    result = invoke("--host", host, "--package", package, "--experiment", "e",
                    "--connect-timeout", "3")
    assert result.exit_code == 1
    assert f"Cannot reach Kubeflow Pipelines at {host}: connection refused" in result.output
    assert "port-forward" in result.output
    assert time.monotonic() - start < 30


def test_make_client_raises_submit_error_for_closed_port(closed_port):
    with pytest.raises(SubmitError, match="connection refused"):
        kfp_submit.make_client(f"http://127.0.0.1:{closed_port}", None, timeout=2)


# --------------------------------------------------------------------------- a stand-in KFP API
class FakeKFP(http.server.BaseHTTPRequestHandler):
    """Answers the v2beta1 calls kfp.Client 2.5 makes to upload and run; records what it got."""

    state: dict = {}

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, body: dict, status: int = 200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_GET(self):
        s, path = self.state, self.path.split("?")[0]
        s["calls"].append(("GET", path))
        if path == "/apis/v2beta1/healthz":
            return self._send({"multi_user": s["multi_user"]})
        if path == "/apis/v2beta1/pipelines":
            return self._send({"pipelines": s["pipelines"]})
        if re.fullmatch(r"/apis/v2beta1/pipelines/[^/]+/versions", path):
            return self._send({"pipeline_versions": [
                {"pipeline_id": "p1", "pipeline_version_id": "v1", "display_name": "v1"}]})
        if path == "/apis/v2beta1/experiments":
            return self._send({"experiments": []})
        if path == "/apis/v2beta1/runs/r1":
            return self._send({"run_id": "r1", "state": s["final_state"]})
        return self._send({"error": path}, 404)

    def do_POST(self):
        s, path = self.state, self.path.split("?")[0]
        s["calls"].append(("POST", path))
        body = self._body()
        if path in ("/apis/v2beta1/pipelines/upload", "/apis/v2beta1/pipelines/upload_version"):
            s["uploaded"] = body.decode("utf-8", "replace")
            s["upload_query"] = self.path
            if path.endswith("upload"):
                return self._send({"pipeline_id": "p1", "display_name": "collabopt-digits"})
            return self._send({"pipeline_id": "p1", "pipeline_version_id": "v2"})
        if path == "/apis/v2beta1/experiments":
            return self._send({"experiment_id": "e1", **json.loads(body)})
        if path == "/apis/v2beta1/runs":
            s["run"] = json.loads(body)
            return self._send({"run_id": "r1", "state": "PENDING"})
        return self._send({"error": path}, 404)


def _uploaded_file(multipart: str) -> str:
    """The one file of a multipart/form-data body."""
    return multipart.split("\r\n\r\n", 1)[1].rsplit("\r\n--", 1)[0]


@contextlib.contextmanager
def fake_kfp(multi_user=False, pipelines=(), final_state="SUCCEEDED"):
    FakeKFP.state = {"calls": [], "multi_user": multi_user, "pipelines": list(pipelines),
                     "final_state": final_state}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeKFP)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", FakeKFP.state
    finally:
        server.shutdown()
        server.server_close()


def test_uploads_then_runs_the_new_pipeline_version(package):
    with fake_kfp() as (host, state):
        result = invoke("--host", host, "--package", package, "--experiment", "collabopt",
                        "--run-name", "nightly", "--wait", "--wait-timeout", "30",
                        "--secret-env", "AWS_ACCESS_KEY_ID=mlpipeline-minio-artifact:accesskey")
    assert result.exit_code == 0, result.output
    assert "run_id=r1 state=SUCCEEDED" in result.output
    docs = [d for d in yaml.safe_load_all(_uploaded_file(state["uploaded"])) if d]
    assert docs[0]["pipelineInfo"]["name"] == "collabopt-digits"
    assert "secretAsEnv" in json.dumps(docs[1])
    run = state["run"]
    assert run["experiment_id"] == "e1" and run["display_name"] == "nightly"
    assert run["pipeline_version_reference"] == {"pipeline_id": "p1", "pipeline_version_id": "v1"}
    assert run["runtime_config"]["pipeline_root"] == "s3://mlpipeline/collabopt/pipeline_root"
    assert run["runtime_config"]["parameters"] == {"epochs": 2}


def test_existing_pipeline_gets_a_new_version_named_after_the_run(package):
    existing = [{"pipeline_id": "p1", "display_name": "collabopt-digits"}]
    with fake_kfp(pipelines=existing) as (host, state):
        result = invoke("--host", host, "--package", package, "--experiment", "e",
                        "--run-name", "nightly-2")
    assert result.exit_code == 0, result.output
    assert ("POST", "/apis/v2beta1/pipelines/upload_version") in state["calls"]
    assert "name=nightly-2" in state["upload_query"]
    assert state["run"]["pipeline_version_reference"]["pipeline_version_id"] == "v2"


def test_failed_run_fails_the_command_when_waiting(package):
    with fake_kfp(final_state="FAILED") as (host, _):
        result = invoke("--host", host, "--package", package, "--experiment", "e", "--wait",
                        "--wait-timeout", "30")
    assert result.exit_code == 1
    assert "Run r1 of 'collabopt-digits' ended in state FAILED" in result.output


def test_multi_user_kfp_needs_a_namespace(package):
    with fake_kfp(multi_user=True) as (host, state):
        result = invoke("--host", host, "--package", package, "--experiment", "e")
    assert result.exit_code == 1
    assert "is multi-user: pass --namespace" in result.output
    assert not [c for c in state["calls"] if c[0] == "POST"]
