"""A real pipeline on a MySQL-backed ML Metadata store (a throw-away MariaDB), read back with
`leaves`, `lineage`, `report` and `runs` — and the store's password never shown anywhere."""
from __future__ import annotations

import dataclasses
import json
import os
import re

import pytest
import yaml

from tests.pipelines.cli_process import CHATTER, Result, collabopt
from tests.pipelines.conftest import write_small_config
from tests.pipelines.test_lineage import mariadb_server

pytestmark = pytest.mark.e2e

PASSWORD = "Hunter2-not-shown"
PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] \S+ done$", re.M)


@dataclasses.dataclass
class MySQLRun:
    workdir: str
    config_path: str
    uri: str
    leaves: list[str]
    run: Result
    outputs: dict[str, Result]


@pytest.fixture(scope="module")
def mysql_run(tmp_path_factory) -> MySQLRun:
    from collabopt.pipelines.config import load_config

    server_dir = tmp_path_factory.mktemp("mariadb")
    with mariadb_server(server_dir) as port:
        workdir = str(tmp_path_factory.mktemp("mysql-run"))
        config_path = write_small_config(workdir)
        uri = f"mysql://root:{PASSWORD}@127.0.0.1:{port}/collabopt_e2e"
        with open(config_path) as f:
            raw = yaml.safe_load(f)
        raw["metadata"] = uri
        with open(config_path, "w") as f:
            yaml.safe_dump(raw, f, sort_keys=False)
        leaves = [leaf.path for leaf in load_config(config_path).all_leaves()]
        run = collabopt("run", config_path)
        outputs = {
            "leaves": collabopt("leaves", "--json", "--metadata", uri),
            "leaves-table": collabopt("leaves", "--metadata", uri, columns=80),
            "lineage": collabopt("lineage", "--selected", "--json", "--metadata", uri),
            "lineage-tree": collabopt("lineage", "--selected", "--metadata", uri),
            "runs": collabopt("runs", "--json", "--metadata", uri),
            "report": collabopt("report", "--metadata", uri, "--out",
                                os.path.join(workdir, "report")),
        }
        yield MySQLRun(workdir, config_path, uri, leaves, run, outputs)


def test_pipeline_runs_on_mysql_with_progress(mysql_run):
    run = mysql_run.run
    assert run.returncode == 0, run.stderr
    assert not CHATTER.search(run.stderr)
    steps = PROGRESS.findall(run.stderr)
    assert steps and steps[-1][0] == steps[-1][1]
    assert "mysql://root:***@127.0.0.1" in run.stderr


def test_leaves_lineage_report_and_runs_read_the_mysql_store(mysql_run):
    for name, result in mysql_run.outputs.items():
        assert result.returncode == 0, (name, result.stderr)
    records = json.loads(mysql_run.outputs["leaves"].stdout)
    assert sorted(r["path"] for r in records) == sorted(mysql_run.leaves)
    assert all(r["int8_accuracy"] > 0.2 and r["vela"][0]["npu_ops"] > 0 for r in records)
    [selected] = [r["path"] for r in records if r["selected"]]
    lineage = json.loads(mysql_run.outputs["lineage"].stdout)
    root = next(a for a in lineage["artifacts"] if a["id"] == lineage["root"])
    assert root["properties"]["selected_path"] == selected
    assert {"ImportExampleGen", "Trainer", "Selector"} <= set(lineage["node_ids"])
    assert lineage["metadata"].startswith("mysql://root:***@")
    [run] = json.loads(mysql_run.outputs["runs"].stdout)
    assert run["state"] == "complete" and run["selected"] == selected
    assert run["leaves"] == len(mysql_run.leaves) and run["run_id"] in mysql_run.run.stderr
    with open(os.path.join(mysql_run.workdir, "report", "index.html")) as f:
        page = f.read()
    assert run["run_id"] in page and "mysql://root:***@" in page


def test_the_password_appears_nowhere(mysql_run):
    """Not on the console, in the log, the report, lineage JSON, nor any file the run wrote."""
    for name, result in [("run", mysql_run.run), *mysql_run.outputs.items()]:
        assert PASSWORD not in result.stdout + result.stderr, name
    log = re.search(r"^Log: (\S+)", mysql_run.run.stderr, re.M).group(1)
    assert os.path.getsize(log) > 0
    checked = 0
    for folder, _, files in os.walk(mysql_run.workdir):
        for name in files:
            path = os.path.join(folder, name)
            if path == mysql_run.config_path:   # the user's own config holds it, of course
                continue
            with open(path, "rb") as f:
                assert PASSWORD.encode() not in f.read(), path
            checked += 1
    assert checked > 20
    with open(log) as f:
        assert "mysql://root:***@" in f.readline()     # the log names the store, masked
