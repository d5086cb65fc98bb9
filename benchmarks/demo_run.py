"""Benchmark: the whole demo (`collabopt demo`) from scratch, then re-run with every step cached.

Prints a table and writes `benchmarks/results/demo.json` and `demo.md` (wall seconds, CPU
seconds, peak RSS of the run, executions per state, and every leaf against the PTQ baseline as
ratios) so runs on different machines can be compared as ratios; README.md's demo table is
`demo.md` (benchmarks/update_readme.py). The demo's goal (issue 9): the selected leaf >= 65 %
smaller (gzip) and >= 60 % faster on Ethos-U55-128 than the PTQ baseline at <= 1 pt int8
accuracy drop; `goal_met` in the JSON. Not a test.

    .venv/bin/python benchmarks/demo_run.py [--workdir DIR] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from results_files import write_results  # benchmarks/ is the script's directory


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


GOAL = {"max_gzip_ratio": 0.35, "max_u55_time_ratio": 0.40, "max_accuracy_drop": 0.01}
U55 = "ethos-u55-128"


def leaf_rows(metadata: str) -> list[dict]:
    """Every leaf of the latest run against the PTQ baseline (ratios), selected one marked."""
    from collabopt.pipelines.metadata.read import read_leaves

    records = read_leaves(metadata)
    base = next(r for r in records if r.path == "ptq")

    def u55(r, field):
        return next((v.get(field) for v in r.vela if v.get("target") == U55), None)

    def ratio(a, b):
        return None if a is None or not b else round(a / b, 3)

    return [{
        "leaf": r.path, "selected": r.selected, "failed": r.failure is not None,
        "int8_accuracy": r.int8_accuracy, "accuracy_drop": r.accuracy_drop,
        "gzip_ratio": ratio(r.gzip_bytes, base.gzip_bytes),
        "u55_time_ratio": ratio(u55(r, "inference_ms"), u55(base, "inference_ms")),
        "u55_flash_ratio": ratio(u55(r, "flash_bytes"), u55(base, "flash_bytes")),
    } for r in records]


def goal_met(rows: list[dict]) -> dict:
    selected = next((r for r in rows if r["selected"]), None)
    if selected is None:
        return {"selected": None, "met": False}
    return {"selected": selected["leaf"], "met": (
        selected["gzip_ratio"] is not None and selected["gzip_ratio"] <= GOAL["max_gzip_ratio"]
        and selected["u55_time_ratio"] is not None
        and selected["u55_time_ratio"] <= GOAL["max_u55_time_ratio"]
        and (selected["accuracy_drop"] or 0.0) <= GOAL["max_accuracy_drop"])}


def markdown(result: dict) -> str:
    def fmt(v, spec):
        return "–" if v is None else format(v, spec)

    first, rows = result["first_run"], result["leaves"]
    lines = [f"On the digits demo ({len(rows)} leaves; one run of `make bench` on this "
             f"{result['cores']}-core machine), every leaf against the PTQ baseline:", "",
             "| leaf | int8 acc | drop | gzip bytes (vs PTQ) | U55 inference (vs PTQ) | "
             "U55 flash (vs PTQ) |", "|---|---|---|---|---|---|"]
    for r in rows:
        name = f"**{r['leaf']} (selected)**" if r["selected"] else r["leaf"]
        if r["failed"]:
            lines.append(f"| {name} | failed | | | | |")
            continue
        lines.append(f"| {name} | {fmt(r['int8_accuracy'], '.3f')} | "
                     f"{fmt(r['accuracy_drop'], '+.3f')} | {fmt(r['gzip_ratio'], '.2f')} | "
                     f"{fmt(r['u55_time_ratio'], '.2f')} | {fmt(r['u55_flash_ratio'], '.2f')} |")
    goal = result["goal"]
    lines += ["", f"The whole demo ran in {first['wall_s']:.0f} s wall time "
              f"({sum(first['executions'].values())} executions, peak "
              f"{first['peak_rss_mb'] / 1024:.1f} GB); re-running it unchanged took "
              f"{result['cached_over_first_wall']:.2f}x of that, every execution served from the "
              f"cache. Goal (selected leaf >= 65 % smaller, >= 60 % faster on U55 at <= 1 pt "
              f"drop): {'met' if goal['met'] else 'not met'} by {goal['selected']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="default: a fresh temporary directory")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results"))
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="collabopt-bench-")
    if os.path.exists(os.path.join(workdir, "metadata.sqlite")):
        shutil.rmtree(workdir)
    cli = [sys.executable, "-m", "collabopt.pipelines.cli", "demo", "--workdir", workdir]

    first = timed_run(cli)
    first["executions"] = execution_counts(os.path.join(workdir, "metadata.sqlite"))
    cached = timed_run(cli)
    cached["executions"] = execution_counts(os.path.join(workdir, "metadata.sqlite"))
    rows = leaf_rows(os.path.join(workdir, "metadata.sqlite"))
    result = {
        "cores": os.cpu_count(),
        "first_run": first,
        "cached_rerun": cached,
        "cached_over_first_wall": round(cached["wall_s"] / first["wall_s"], 3),
        "leaves": rows,
        "goal": goal_met(rows),
    }
    result["goal_met"] = result["goal"]["met"]
    print(f"{'run':<14}{'wall s':>10}{'cpu s':>10}{'peak RSS MB':>14}  executions")
    for name in ("first_run", "cached_rerun"):
        r = result[name]
        print(f"{name:<14}{r['wall_s']:>10}{r['cpu_s']:>10}{r['peak_rss_mb']:>14}  {r['executions']}")
    print(f"cached re-run / first run (wall): {result['cached_over_first_wall']}")
    table = markdown(result)
    write_results(args.out, "demo", result, {"demo": table})
    print(table)


if __name__ == "__main__":
    main()
