"""Opening stores: read-only readers, one-line errors, passwords never shown; the quiet console and
tables that fit the terminal. Fast: no pipeline runs (a hand-made store, real `collabopt`
subprocesses, a throw-away MariaDB when installed)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml
from rich.console import Console

from collabopt.pipelines.metadata.leaves import LeafRecord
from collabopt.pipelines.metadata.store import redact, secrets_of
from tests.pipelines.cli_process import CHATTER, collabopt
from tests.pipelines.test_lineage import _two_runs, mysql_uri  # noqa: F401  (fixture)

SECRET = "s3cr3t-Pa55"


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# --- passwords ---------------------------------------------------------------------------------

@pytest.mark.parametrize("uri, shown", [
    (f"mysql://user:{SECRET}@db.example:3306/mlmd", "mysql://user:***@db.example:3306/mlmd"),
    (f"mysql://user:{SECRET}@:3306/mlmd", "mysql://user:***@:3306/mlmd"),
    ("mysql://user:p%40ss@host/db", "mysql://user:***@host/db"),
    (f"mysql://user:{SECRET}@host:notaport/db", "mysql://user:***@host:notaport/db"),
    ("mysql://root@host/db", "mysql://root@host/db"),
    ("grpc://localhost:8080", "grpc://localhost:8080"),
    ("/data/metadata.sqlite", "/data/metadata.sqlite"),
])
def test_redact_hides_the_password_and_nothing_else(uri, shown):
    assert redact(uri) == shown
    for secret in secrets_of(uri):
        assert secret not in redact(uri)


def test_secrets_include_the_decoded_password():
    assert set(secrets_of("mysql://u:p%40ss@h/db")) == {"p%40ss", "p@ss"}
    assert secrets_of("/a/b.sqlite") == [] and secrets_of("mysql://root@h/db") == []


# --- one-line errors, read-only readers (real subprocesses) ------------------------------------

def _one_line_error(result, *needles: str) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert len(result.err_lines) == 1, result.stderr
    line = result.err_lines[0]
    assert line.startswith("error: ") and not CHATTER.search(result.stderr), result.stderr
    for needle in needles:
        assert needle in line, line
    return line


def test_mysql_url_without_host_is_one_line_without_the_password():
    line = _one_line_error(collabopt("leaves", "--metadata", f"mysql://user:{SECRET}@:3306/db"),
                           "has no host", "mysql://user:***@:3306/db")
    assert SECRET not in line


def test_unreachable_mysql_is_one_line_without_the_password():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = collabopt("runs", "--metadata", f"mysql://user:{SECRET}@127.0.0.1:{port}/db")
    line = _one_line_error(result, "unreachable", f"127.0.0.1:{port}", "Connection refused")
    assert SECRET not in result.stderr


def test_readers_never_create_or_change_a_store(tmp_path):
    missing = tmp_path / "missing.sqlite"
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    text = tmp_path / "notes.sqlite"
    text.write_text("not a database\n")
    for command in (["leaves"], ["runs"], ["lineage", "--selected"], ["report", "--out",
                                                                     str(tmp_path / "r")]):
        _one_line_error(collabopt(*command, "--metadata", str(missing)), "No ML Metadata store")
        _one_line_error(collabopt(*command, "--metadata", str(empty)), "not an ML Metadata store")
        _one_line_error(collabopt(*command, "--metadata", str(text)), "not a SQLite file")
    assert not missing.exists() and empty.stat().st_size == 0
    assert text.read_text() == "not a database\n"
    assert sorted(os.listdir(tmp_path)) == ["empty.sqlite", "notes.sqlite"]


def test_readers_open_a_real_store_read_only(tmp_path):
    fake, _ = _two_runs(tmp_path, "prune>ptq")
    before = _digest(fake.uri)
    for command in (["leaves", "--json"], ["runs", "--json"], ["lineage", "--selected", "--json"]):
        result = collabopt(*command, "--metadata", fake.uri)
        assert result.returncode == 0, result.stderr
        json.loads(result.stdout)
        assert not CHATTER.search(result.stderr), result.stderr
    assert _digest(fake.uri) == before
    assert sorted(os.listdir(tmp_path)) == ["mlmd.sqlite"]   # no journal, no lock, no report


def test_config_errors_are_one_line_and_nothing_else(tmp_path):
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("mode: greedy\n")
    _one_line_error(collabopt("run", str(bad_key)), "mode", "greedy")
    # A value checked by the core parameter classes: validating it imports TensorFlow.
    from collabopt.pipelines.demo.setup import demo_config

    raw = demo_config()
    raw["data"]["examples"] = str(tmp_path)
    raw["pruning"]["target_sparsity"] = 1.5
    bad_value = tmp_path / "bad_value.yaml"
    bad_value.write_text(yaml.safe_dump(raw))
    _one_line_error(collabopt("run", str(bad_value)), "pruning", "1.5")


MARIADB_CLIENT = shutil.which("mariadb")


def test_read_only_commands_do_not_create_a_mysql_database(mysql_uri):  # noqa: F811
    uri = mysql_uri.replace("root@", f"root:{SECRET}@").rsplit("/", 1)[0] + "/never_created"
    result = collabopt("leaves", "--metadata", uri)
    line = _one_line_error(result, "refused", "never_created", "does not exist")
    assert SECRET not in result.stderr and "root:***@" in line
    if MARIADB_CLIENT:
        port = re.search(r":(\d+)/", uri).group(1)
        databases = subprocess.run([MARIADB_CLIENT, "--protocol=tcp", "-h127.0.0.1", f"-P{port}",
                                    "-uroot", "-N", "-e", "SHOW DATABASES"],
                                   capture_output=True, text=True, check=True).stdout.split()
        assert "never_created" not in databases


# --- tables that never cut a number ------------------------------------------------------------

def _record(path, selected=False, reasons=(), **values) -> LeafRecord:
    vela = [{"target": "ethos-u55-128", "inference_ms": 0.1026, "sram_bytes": 13_072,
             "flash_bytes": 1_249_184, "npu_ops": 6, "cpu_ops": 0},
            {"target": "ethos-u65-256", "inference_ms": 0.0513, "sram_bytes": 13_072,
             "flash_bytes": 1_249_184, "npu_ops": 6, "cpu_ops": 0}]
    fields = dict(path=path, uri="", int8_accuracy=0.96875, accuracy_drop=-0.00312,
                  tflite_bytes=1_453_824, gzip_bytes=1_247_857, sparsity=0.75,
                  max_unique_per_kernel=16, max_unique_per_channel=16, vela=vela, blessed=selected,
                  selected=selected, reasons=list(reasons), evaluation_id=1, tflite_id=2)
    fields.update(values)
    return LeafRecord(**fields)


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_leaves_table_never_cuts_a_number(width):
    from collabopt.pipelines.leaves import leaves_rows, leaves_table

    long_reason = ("int8_accuracy 0.8125 is below min_accuracy=0.9 by 0.0875; tflite_bytes "
                   "1,453,824 is above max_tflite_bytes=1,000,000 by 453,824")
    records = [_record("ptq", selected=True),
               _record("a-long>leaf>name>with>levels", reasons=[long_reason])]
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None)
    console.print(leaves_table(records, console))
    text = buffer.getvalue()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    cells = {c for row in leaves_rows(records) for c in row[1:-1] if c and c != "-"}
    for cell in cells:  # every number, whole, on one line
        assert cell in text, (cell, text)
    flat = re.sub(r"\s+", " ", text)
    assert "SELECTED" in flat and "0.0875" in flat and "453,824" in flat
