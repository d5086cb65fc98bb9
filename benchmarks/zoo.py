"""Benchmark: train every zoo workload once; its parameters, eval accuracy and fit() time.

Each workload trains in its own process (so one's graph tracing does not warm up the next) and
prints a row: wall seconds of fit(), CPU seconds of data + training (steadier than wall time on a
shared machine), wall seconds of the process; `--json` writes the rows. Not a test: the zoo's promise (> 0.85 accuracy, well
under a minute on 2 cores) is checked here.

    .venv/bin/python benchmarks/zoo.py [--json out.json] [NAME ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def one(name: str) -> dict:
    from collabopt.pipelines import zoo

    cpu = time.process_time()
    trained = zoo.train(name)
    return {"name": name, "parameters": zoo.parameter_count(trained.model),
            "accuracy": round(trained.accuracy, 4), "fit_s": round(trained.seconds, 1),
            "cpu_s": round(time.process_time() - cpu, 1),
            "feature_shape": list(trained.feature_shape)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--json", dest="json_path", default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    from collabopt.pipelines.zoo import ZOO

    rows = []
    print(f"{'workload':14} {'params':>8} {'accuracy':>9} {'fit s':>7} {'cpu s':>7} "
          f"{'process s':>10}")
    for name in args.names or list(ZOO):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True,
                              text=True, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["process_s"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(f"{name:14} {row['parameters']:>8} {row['accuracy']:>9.3f} {row['fit_s']:>7.1f} "
              f"{row['cpu_s']:>7.1f} {row['process_s']:>10.1f}", flush=True)
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
