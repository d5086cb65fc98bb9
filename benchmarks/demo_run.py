"""Benchmark: the whole demo (`collabopt demo`) from scratch, then re-run with every step cached.

Prints a table and writes JSON (wall seconds, CPU seconds, peak RSS of the run, executions per
node type) so runs on different machines can be compared as ratios. Not a test.

    .venv/bin/python benchmarks/demo_run.py [--workdir DIR] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time


def timed_run(args: list[str]) -> dict:
    """Runs a command in a child process; wall/CPU seconds and the child's peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:])
        raise SystemExit(f"{' '.join(args)} failed with exit code {proc.returncode}")
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "peak_rss_mb": round(after.ru_maxrss / 1024, 0),  # max over children so far
    }


def execution_counts(metadata: str) -> dict[str, int]:
    from ml_metadata.proto import metadata_store_pb2

    from collabopt.pipelines.metadata.store import open_store

    store = open_store(metadata)
    latest = max(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.create_time_since_epoch)
    states = {}
    for execution in store.get_executions_by_context(latest.id):
        name = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
        states[name] = states.get(name, 0) + 1
    return states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="default: a fresh temporary directory")
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="collabopt-bench-")
    if os.path.exists(os.path.join(workdir, "metadata.sqlite")):
        shutil.rmtree(workdir)
    cli = [sys.executable, "-m", "collabopt.pipelines.cli", "demo", "--workdir", workdir]

    first = timed_run(cli)
    first["executions"] = execution_counts(os.path.join(workdir, "metadata.sqlite"))
    cached = timed_run(cli)
    cached["executions"] = execution_counts(os.path.join(workdir, "metadata.sqlite"))
    result = {
        "cores": os.cpu_count(),
        "first_run": first,
        "cached_rerun": cached,
        "cached_over_first_wall": round(cached["wall_s"] / first["wall_s"], 3),
    }
    print(f"{'run':<14}{'wall s':>10}{'cpu s':>10}{'peak RSS MB':>14}  executions")
    for name in ("first_run", "cached_rerun"):
        r = result[name]
        print(f"{name:<14}{r['wall_s']:>10}{r['cpu_s']:>10}{r['peak_rss_mb']:>14}  {r['executions']}")
    print(f"cached re-run / first run (wall): {result['cached_over_first_wall']}")
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
