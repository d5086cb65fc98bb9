"""The distribution installs collabopt.components / collabopt.pipelines and no top-level names.

The wheel is built from this checkout and installed (without dependencies) into a fresh virtual
environment; the test environment's site-packages is added to that venv's path by a plain `.pth`
line so TFX and TensorFlow are importable there, while this checkout's editable install (whose
finder only a site directory's own `.pth` hooks would load) stays out of it.
"""
from __future__ import annotations

import os
import pathlib
import site
import subprocess
import sys
import textwrap
import zipfile

import pytest
import tomli

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = {"collabopt": "collabopt", "components": "collabopt.components",
                 "pipelines": "collabopt.pipelines"}


def _package_folders() -> set[str]:
    """Every folder of the source tree that is a package, under its installed name."""
    names = set()
    for folder, installed in PACKAGE_ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            names.add(".".join([installed, *rel.parts]))
    return names


def test_pyproject_lists_every_package_folder():
    with open(REPO / "pyproject.toml", "rb") as f:
        tool = tomli.load(f)["tool"]["setuptools"]
    assert set(tool["packages"]) == _package_folders()
    assert tool["package-dir"] == {v: k for k, v in PACKAGE_ROOTS.items()}


def test_no_module_imports_the_top_level_names():
    offenders = []
    for folder in ("collabopt", "components", "pipelines", "tests", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            if path == pathlib.Path(__file__).resolve():
                continue  # the user project below imports its own `components` on purpose
            for number, line in enumerate(path.read_text().splitlines(), 1):
                stripped = line.strip()
                if stripped.startswith(("from components", "import components",
                                        "from pipelines", "import pipelines")):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {stripped}")
    assert not offenders, "\n".join(offenders)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(REPO)], check=True, timeout=600)
    (wheel,) = out.glob("collabopt-*.whl")
    return wheel


def test_wheel_holds_every_source_file_under_collabopt(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    top_levels = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_levels == {"collabopt"}
    for folder, installed in PACKAGE_ROOTS.items():
        for path in (REPO / folder).rglob("*"):
            if path.suffix in (".py", ".j2") and "__pycache__" not in path.parts:
                rel = path.relative_to(REPO / folder).as_posix()
                assert f"{installed.replace('.', '/')}/{rel}" in names, rel


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory, wheel) -> pathlib.Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", purelib, str(wheel)], check=True, timeout=600)
    # Dependencies from the test environment, as a plain path (no .pth hooks of that directory run,
    # so this checkout's editable finder is not loaded).
    pathlib.Path(purelib, "test-environment-deps.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")
    return venv


def _purelib(venv: pathlib.Path) -> pathlib.Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def test_site_packages_has_no_top_level_components_or_pipelines(fresh_venv):
    installed = {p.name for p in _purelib(fresh_venv).iterdir()}
    assert "collabopt" in installed
    assert "components" not in installed and "pipelines" not in installed
    assert (_purelib(fresh_venv) / "collabopt" / "components" / "pruner" / "executor.py").exists()


def test_user_project_with_its_own_components_package_imports_both(fresh_venv, tmp_path):
    project = tmp_path / "my_tfx_project"
    (project / "components").mkdir(parents=True)
    (project / "components" / "__init__.py").write_text("WHO = 'user'\n")
    (project / "pipelines").mkdir()
    (project / "pipelines" / "__init__.py").write_text("WHO = 'user pipelines'\n")
    (project / "main.py").write_text(textwrap.dedent("""
        import components, pipelines
        assert components.WHO == 'user', components.__file__
        assert pipelines.WHO == 'user pipelines', pipelines.__file__
        from collabopt.components import (Evaluator, PreservingQAT, Pruner, SparseClusterer,
                                          TFLiteConverter, VelaCompiler)
        from collabopt import Pruner as ShortPruner, TFLiteModel
        import collabopt.pipelines.cli
        assert ShortPruner is Pruner
        assert Pruner.__module__ == 'collabopt.components.pruner.component'
        assert TFLiteModel.TYPE_NAME == 'collabopt.TFLiteModel'
        import tfx.utils.import_utils as iu
        assert iu.import_class_by_path(TFLiteModel.TYPE_NAME) is TFLiteModel
        assert '/site-packages/collabopt/' in Pruner.__init__.__code__.co_filename
        print('ok')
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    result = subprocess.run([str(fresh_venv / "bin" / "python"), "main.py"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
