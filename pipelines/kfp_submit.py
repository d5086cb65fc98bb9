"""Upload a compiled collabopt pipeline to Kubeflow Pipelines and start a run.

The Kubernetes Job in ``kustomize/`` runs this after ``collabopt compile``; a person can run it
from a laptop against a port-forwarded API just as well::

    kubectl -n kubeflow port-forward svc/ml-pipeline 8888:8888 &
    python -m collabopt.pipelines.kfp_submit --host http://localhost:8888 \\
        --package pipeline.json --experiment collabopt --wait

``--package`` takes what ``collabopt compile`` writes: TFX's ``KubeflowV2DagRunner`` output, a
``PipelineJob`` JSON (``pipelineSpec`` + ``runtimeConfig``) or a ``PipelineSpec`` YAML. The KFP 2.5
client accepts only the YAML form, so a JSON package is converted here and the pipeline root
compiled into it is passed on to the run (``--pipeline-root`` overrides it).

Every failure a user can meet ends in a ``SubmitError`` that names the host or file and the fix;
the command prints it and exits with status 1.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import re
import tempfile
from typing import Any, Iterable, Mapping

import click
import yaml

from collabopt.components.core.errors import CollaboptError

# Where Kubeflow projects a ServiceAccount token with audience `pipelines.kubeflow.org`
# (kfp.client.KF_PIPELINES_SA_TOKEN_PATH); present only in multi-user deployments that mount it.
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
DEFAULT_CONNECT_TIMEOUT = 10.0
FINAL_STATES = ("SUCCEEDED", "SKIPPED", "FAILED", "CANCELED")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SubmitError(CollaboptError):
    """The pipeline could not be uploaded to or run on Kubeflow Pipelines."""


@dataclasses.dataclass
class Package:
    """A pipeline ready for the KFP API: the spec, its platform spec and the run's defaults."""

    pipeline_spec: dict[str, Any]
    platform_spec: dict[str, Any] | None = None
    pipeline_root: str | None = None
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.pipeline_spec.get("pipelineInfo", {}).get("name", "")


# --------------------------------------------------------------------------- package handling
def load_package(path: str) -> Package:
    """Reads a compiled pipeline: TFX's PipelineJob JSON, or a PipelineSpec in JSON or YAML."""
    if not path.endswith((".json", ".yaml", ".yml")):
        raise SubmitError(f"Cannot read pipeline package '{path}': expected a .json or .yaml file "
                          "as written by `collabopt compile --out pipeline.json`.")
    try:
        with open(path, encoding="utf-8") as f:
            if path.endswith(".json"):
                docs = [json.load(f)]
            else:
                docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise SubmitError(f"Cannot read pipeline package '{path}': {exc}. "
                          "Recompile it with `collabopt compile`.") from exc
    if not docs or not isinstance(docs[0], dict):
        raise SubmitError(f"Pipeline package '{path}' is empty or not a mapping. "
                          "Recompile it with `collabopt compile`.")
    first = docs[0]
    if "pipelineSpec" in first:  # TFX KubeflowV2DagRunner: a PipelineJob
        runtime = first.get("runtimeConfig") or {}
        package = Package(
            pipeline_spec=first["pipelineSpec"],
            platform_spec=docs[1] if len(docs) > 1 else None,
            pipeline_root=runtime.get("gcsOutputDirectory") or None,
            parameters=_runtime_parameters(runtime),
        )
    elif "pipelineInfo" in first and "root" in first:
        package = Package(pipeline_spec=first, platform_spec=docs[1] if len(docs) > 1 else None,
                          pipeline_root=first.get("defaultPipelineRoot") or None)
    else:
        raise SubmitError(
            f"'{path}' is not a Kubeflow pipeline: it has neither 'pipelineSpec' (a PipelineJob "
            "from KubeflowV2DagRunner) nor 'pipelineInfo' and 'root' (a PipelineSpec). "
            "Pass the file `collabopt compile --out` wrote.")
    _validate_spec(package, path)
    return package


def _runtime_parameters(runtime: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values from a PipelineJob runtimeConfig (`parameterValues`, or the older `parameters`)."""
    values = dict(runtime.get("parameterValues") or {})
    for name, value in (runtime.get("parameters") or {}).items():  # {"intValue": "3"} etc.
        if "intValue" in value:
            values[name] = int(value["intValue"])
        elif "doubleValue" in value:
            values[name] = float(value["doubleValue"])
        elif "stringValue" in value:
            values[name] = value["stringValue"]
    return values


def _validate_spec(package: Package, path: str) -> None:
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    try:
        json_format.ParseDict(package.pipeline_spec, pipeline_spec_pb2.PipelineSpec())
        if package.platform_spec:
            json_format.ParseDict(package.platform_spec, pipeline_spec_pb2.PlatformSpec())
    except json_format.ParseError as exc:
        raise SubmitError(f"'{path}' is not a valid Kubeflow pipeline spec: {exc}. "
                          "Recompile it with `collabopt compile`.") from exc
    if not package.name:
        raise SubmitError(f"'{path}' has no pipelineInfo.name. Recompile it with `collabopt compile`.")
    executors = package.pipeline_spec.get("deploymentSpec", {}).get("executors", {})
    resolvers = sorted(name for name, spec in executors.items() if "resolver" in spec)
    if resolvers:
        raise SubmitError(
            f"'{path}' contains TFX Resolver steps ({', '.join(resolvers)}); the open-source "
            "Kubeflow Pipelines backend does not implement resolver executors (only Vertex AI "
            "Pipelines does). Remove the Resolver nodes from the pipeline and recompile.")


def parse_env(values: Iterable[str]) -> dict[str, str]:
    """`NAME=VALUE` pairs for every step's container."""
    env: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not _ENV_NAME.match(name):
            raise click.BadParameter(f"'{item}' is not NAME=VALUE (NAME a valid variable name).",
                                     param_hint="--env")
        env[name] = value
    return env


def parse_secret_env(values: Iterable[str]) -> dict[str, tuple[str, str]]:
    """`NAME=SECRET:KEY` triples: env var NAME of every step comes from key KEY of Secret SECRET."""
    env: dict[str, tuple[str, str]] = {}
    for item in values:
        name, sep, ref = item.partition("=")
        secret, colon, key = ref.partition(":")
        if not sep or not colon or not _ENV_NAME.match(name) or not secret or not key:
            raise click.BadParameter(
                f"'{item}' is not NAME=SECRET:KEY (e.g. AWS_ACCESS_KEY_ID=mlpipeline-minio-artifact:accesskey).",
                param_hint="--secret-env")
        env[name] = (secret, key)
    return env


def add_environment(package: Package, env: Mapping[str, str],
                    secret_env: Mapping[str, tuple[str, str]]) -> None:
    """Sets env vars on every container step (importers run in KFP's own image and get none).

    Plain values go into the PipelineSpec (`container.env`); Secret references into the
    Kubernetes platform spec (`secretAsEnv`, what kfp-kubernetes' `use_secret_as_env` writes).
    """
    executors = package.pipeline_spec.get("deploymentSpec", {}).get("executors", {})
    containers = sorted(name for name, spec in executors.items() if "container" in spec)
    for name in containers:
        container = executors[name]["container"]
        current = [e for e in container.get("env", []) if e.get("name") not in env]
        container["env"] = current + [{"name": k, "value": v} for k, v in sorted(env.items())]
    if not secret_env:
        return
    platform = package.platform_spec or {}
    k8s_executors = (platform.setdefault("platforms", {}).setdefault("kubernetes", {})
                     .setdefault("deploymentSpec", {}).setdefault("executors", {}))
    for name in containers:
        config = k8s_executors.setdefault(name, {})
        by_secret: dict[str, list[dict[str, str]]] = {}
        for var, (secret, key) in sorted(secret_env.items()):
            by_secret.setdefault(secret, []).append({"secretKey": key, "envVar": var})
        config.setdefault("secretAsEnv", []).extend(
            {"secretName": secret, "keyToEnv": keys} for secret, keys in by_secret.items())
    package.platform_spec = platform


def write_yaml(package: Package, directory: str) -> str:
    """The package as the KFP client wants it: PipelineSpec YAML, platform spec as second doc."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", package.name) or "pipeline"
    path = os.path.join(directory, f"{safe}.yaml")
    docs = [package.pipeline_spec] + ([package.platform_spec] if package.platform_spec else [])
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump_all(docs, f, sort_keys=True)
    return path


# --------------------------------------------------------------------------- talking to KFP
def check_reachable(host: str, timeout: float = DEFAULT_CONNECT_TIMEOUT):
    """Asks the KFP API's healthz endpoint, bounded by `timeout` seconds; returns its answer.

    Uses the generated API client that `kfp.Client` itself is built on, with retries off, so an
    unreachable host fails in seconds instead of hanging.
    """
    import kfp_server_api
    import urllib3

    config = kfp_server_api.Configuration(host=host)
    config.retries = False
    api = kfp_server_api.HealthzServiceApi(kfp_server_api.ApiClient(config))
    try:
        return api.get_healthz(_request_timeout=(timeout, timeout))
    except urllib3.exceptions.HTTPError as exc:
        raise SubmitError(
            f"Cannot reach Kubeflow Pipelines at {host}: {_reason(exc)}. Check --host: inside the "
            "cluster it is http://ml-pipeline.kubeflow:8888; from a workstation port-forward first "
            "(`kubectl -n kubeflow port-forward svc/ml-pipeline 8888:8888`, then "
            "--host http://localhost:8888).") from exc
    except kfp_server_api.ApiException as exc:
        hint = (" — is --host the KFP API (service ml-pipeline, port 8888) and not the UI?"
                if exc.status == 404 else "")
        raise SubmitError(f"Kubeflow Pipelines at {host} answered the health check with "
                          f"HTTP {exc.status} {exc.reason}{hint}") from exc


def _reason(exc: Exception) -> str:
    inner = getattr(exc, "reason", None) or exc
    text = str(inner)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "connection timed out"
    return text.split(": ", 1)[-1] if "object at 0x" in text else text


def _api_error(action: str, host: str, exc: Exception) -> SubmitError:
    status = getattr(exc, "status", None)
    body = (getattr(exc, "body", None) or "")
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    detail = f"HTTP {status} {getattr(exc, 'reason', '')}".strip() if status else str(exc)
    hint = ""
    if status in (401, 403):
        hint = (" In multi-user Kubeflow pass --namespace <your profile namespace> and run with a "
                f"ServiceAccount token for audience pipelines.kubeflow.org at {SA_TOKEN_PATH} "
                "(the kustomize Job mounts one) that the profile's RBAC lets create runs.")
    body = f": {body.strip()[:500]}" if body else ""
    return SubmitError(f"Kubeflow Pipelines at {host} refused to {action} ({detail}){body}.{hint}")


def make_client(host: str, namespace: str | None, timeout: float):
    """A `kfp.Client` for `host`, after a bounded reachability check."""
    healthz = check_reachable(host, timeout)
    if getattr(healthz, "multi_user", False) and not namespace:
        raise SubmitError(f"Kubeflow Pipelines at {host} is multi-user: pass --namespace with "
                          "the profile namespace the run belongs to.")
    import kfp

    credentials = None
    token_path = os.environ.get(SA_TOKEN_ENV, SA_TOKEN_PATH)
    if os.path.exists(token_path):
        from kfp.client import ServiceAccountTokenVolumeCredentials

        credentials = ServiceAccountTokenVolumeCredentials(path=token_path)
    try:
        return kfp.Client(host=host, namespace=namespace or "kubeflow", credentials=credentials)
    except Exception as exc:  # the client's own healthz call; any transport error
        raise _api_error("open a session", host, exc) from exc


def _find_pipeline_id(client, name: str, namespace: str | None) -> str | None:
    flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name",
                                      "stringValue": name}]})
    found = client.list_pipelines(filter=flt, namespace=namespace, page_size=2).pipelines or []
    return found[0].pipeline_id if found else None


def upload(client, path: str, name: str, version: str, namespace: str | None) -> tuple[str, str]:
    """Uploads `path` as pipeline `name` (new) or as version `version` of it; returns both ids."""
    pipeline_id = _find_pipeline_id(client, name, namespace)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(path, pipeline_name=name, namespace=namespace,
                                          description="collabopt deployment tree")
        pipeline_id = pipeline.pipeline_id
        versions = client.list_pipeline_versions(pipeline_id=pipeline_id, page_size=1,
                                                 sort_by="created_at desc").pipeline_versions
        if not versions:
            raise SubmitError(f"Uploaded pipeline '{name}' ({pipeline_id}) has no version.")
        return pipeline_id, versions[0].pipeline_version_id
    created = client.upload_pipeline_version(path, pipeline_version_name=version,
                                             pipeline_id=pipeline_id)
    return pipeline_id, created.pipeline_version_id


@dataclasses.dataclass(frozen=True)
class SubmitResult:
    run_id: str
    pipeline_id: str | None
    state: str | None


def submit(*, host: str, package_path: str, experiment: str, run_name: str | None = None,
           namespace: str | None = None, pipeline_root: str | None = None,
           env: Mapping[str, str] | None = None,
           secret_env: Mapping[str, tuple[str, str]] | None = None,
           service_account: str | None = None, upload_pipeline: bool = True, wait: bool = False,
           wait_timeout: float = 6 * 3600, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
           ) -> SubmitResult:
    """Uploads and runs a compiled pipeline; with `wait`, fails unless the run succeeds."""
    package = load_package(package_path)
    add_environment(package, env or {}, secret_env or {})
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_name = run_name or f"{package.name}-{stamp}"
    root = pipeline_root or package.pipeline_root
    client = make_client(host, namespace, connect_timeout)
    import kfp_server_api

    with tempfile.TemporaryDirectory(prefix="kfp-submit-") as tmp:
        path = write_yaml(package, tmp)
        try:
            pipeline_id = None
            if upload_pipeline:
                pipeline_id, version_id = upload(client, path, package.name, run_name, namespace)
                exp = client.create_experiment(name=experiment, namespace=namespace)
                run = client.run_pipeline(
                    experiment_id=exp.experiment_id, job_name=run_name, pipeline_id=pipeline_id,
                    version_id=version_id, params=package.parameters, pipeline_root=root,
                    service_account=service_account)
            else:
                run = client.create_run_from_pipeline_package(
                    path, arguments=package.parameters, run_name=run_name,
                    experiment_name=experiment, namespace=namespace, pipeline_root=root,
                    service_account=service_account).run_info
        except kfp_server_api.ApiException as exc:
            raise _api_error(f"upload or run '{package.name}'", host, exc) from exc
    logging.info("Started run %s (%s) of %s", run_name, run.run_id, package.name)
    if not wait:
        return SubmitResult(run.run_id, pipeline_id, None)
    try:
        final = client.wait_for_run_completion(run.run_id, timeout=wait_timeout)
    except TimeoutError as exc:
        raise SubmitError(f"Run {run.run_id} did not finish within {wait_timeout:.0f} s; it goes "
                          "on in the cluster — follow it in the KFP UI.") from exc
    except kfp_server_api.ApiException as exc:
        raise _api_error(f"report run {run.run_id}", host, exc) from exc
    state = str(final.state or "")
    if state.upper() != "SUCCEEDED":
        raise SubmitError(f"Run {run.run_id} of '{package.name}' ended in state {state or 'unknown'}; "
                          "see the failed step's logs in the KFP UI.")
    return SubmitResult(run.run_id, pipeline_id, state)


# --------------------------------------------------------------------------- command line
def _check_host(ctx, param, value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value or ""):
        raise click.BadParameter(f"'{value}' must start with http:// or https:// "
                                 "(e.g. http://ml-pipeline.kubeflow:8888).")
    return value.rstrip("/")


@click.command(name="kfp-submit", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", required=True, envvar="KF_PIPELINES_ENDPOINT", callback=_check_host,
              help="KFP API URL, e.g. http://ml-pipeline.kubeflow:8888 (env KF_PIPELINES_ENDPOINT).")
@click.option("--package", "package_path", required=True,
              type=click.Path(exists=True, dir_okay=False, readable=True),
              help="Compiled pipeline (`collabopt compile --out`): PipelineJob JSON or spec YAML.")
@click.option("--experiment", required=True, help="KFP experiment to run in (created if missing).")
@click.option("--run-name", default=None, help="Run name; default <pipeline>-<UTC timestamp>.")
@click.option("--namespace", default=None,
              help="Profile namespace (multi-user Kubeflow only).")
@click.option("--pipeline-root", default=None,
              help="Override the pipeline root compiled into the package (gs://, s3://, minio://).")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE",
              help="Env var for every step (repeatable), e.g. S3_ENDPOINT=minio-service.kubeflow:9000.")
@click.option("--secret-env", "secret_env", multiple=True, metavar="NAME=SECRET:KEY",
              help="Env var for every step from a Secret key in the run's namespace (repeatable).")
@click.option("--service-account", default=None,
              help="ServiceAccount the pipeline's pods run as (KFP default: pipeline-runner).")
@click.option("--upload/--no-upload", default=True, show_default=True,
              help="Register the package as a pipeline (version) before running it.")
@click.option("--wait", is_flag=True, help="Wait for the run and exit 1 unless it succeeds.")
@click.option("--wait-timeout", type=click.FloatRange(min=1), default=6 * 3600, show_default=True,
              help="Seconds --wait waits.")
@click.option("--connect-timeout", type=click.FloatRange(min=0.1), default=DEFAULT_CONNECT_TIMEOUT,
              show_default=True, help="Seconds to wait for the KFP API to answer at all.")
def main(host, package_path, experiment, run_name, namespace, pipeline_root, env, secret_env,
         service_account, upload, wait, wait_timeout, connect_timeout):
    """Upload a compiled collabopt pipeline to Kubeflow Pipelines and start a run."""
    env_vars = parse_env(env)
    secret_vars = parse_secret_env(secret_env)
    try:
        result = submit(host=host, package_path=package_path, experiment=experiment,
                        run_name=run_name, namespace=namespace, pipeline_root=pipeline_root,
                        env=env_vars, secret_env=secret_vars, service_account=service_account,
                        upload_pipeline=upload, wait=wait, wait_timeout=wait_timeout,
                        connect_timeout=connect_timeout)
    except SubmitError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"run_id={result.run_id}" + (f" state={result.state}" if result.state else ""))


if __name__ == "__main__":
    main()
