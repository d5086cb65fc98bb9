"""The container engine and the image, found (or installed) and built once per test session."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.container import dockerfile as df
from tests.container.kfp_harness import ContainerEngine

IMAGE = "collabopt:test"
SCRIPTS = df.REPO / "scripts"


def _find_engine() -> str | None:
    proc = subprocess.run([str(SCRIPTS / "container-engine")], capture_output=True, text=True,
                          timeout=120)
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.fixture(scope="session")
def container_engine() -> ContainerEngine:
    """docker or podman; as root with apt-get, installs podman when there is neither."""
    engine = _find_engine()
    if engine is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run([str(SCRIPTS / "container-deps")], capture_output=True, timeout=1200)
        engine = _find_engine()
    if engine is None:
        pytest.skip("no container engine: no Docker daemon answers, podman is not installed, and "
                    "it cannot be installed here (needs root and apt-get). Install Docker or "
                    "Podman, or run `make system-deps` as root")
    env = {"CONTAINER_ENGINE": engine}
    if engine == "podman" and not os.environ.get("CONTAINERS_CONF") and shutil.which("runc"):
        env["CONTAINERS_CONF"] = str(df.REPO / "container" / "containers.conf")
    return ContainerEngine(command=(engine,), env=env)


@pytest.fixture(scope="session")
def image(container_engine, tmp_path_factory) -> str:
    """container/Dockerfile built by scripts/build-image (what `make image` runs), once a session."""
    log = tmp_path_factory.mktemp("image") / "build.log"
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.run([str(SCRIPTS / "build-image"), IMAGE], stdout=out,
                              stderr=subprocess.STDOUT, timeout=3600,
                              env=dict(os.environ, **container_engine.env))
    tail = log.read_text()[-3000:]
    assert proc.returncode == 0, f"scripts/build-image failed ({log}):\n{tail}"
    print(f"\nbuilt {IMAGE} in {time.monotonic() - started:.0f} s: {tail.splitlines()[-1]}")
    return IMAGE
