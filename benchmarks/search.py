"""Benchmark: `mode: search` against the exhaustive grid of the same levels, on two workloads.

For each workload (the digits demo CNN, and a zoo network of another architecture) the same
config runs twice through `collabopt run`, each in a fresh store: once `mode: exhaustive` (every
leaf of the grid), once `mode: search`. Reported as ratios of the search to the grid:

- the best leaf each found (the Selector's choice): its objective value (Vela inference time on
  the first target), gzip bytes and int8 accuracy;
- the fine-tuning steps each trained (Pruner / SparseClusterer / PreservingQAT executions that
  really ran) and their summed duration from ML Metadata ("training time");
- wall time of the whole command.

Goals (`goal_met` in the JSON): the search's best leaf within 2 % of the grid's best objective,
at <= 50 % of the grid's training time. Writes `benchmarks/results/search.json` and
`search.md`. Not a test; takes tens of minutes on 2 cores.

    .venv/bin/python benchmarks/search.py [--workloads digits,cnn_1d] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from results_files import write_results  # benchmarks/ is the script's directory

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
KERAS_STEPS = ("Pruner_", "SparseClusterer_", "PreservingQAT_")
OBJECTIVE_WITHIN = 0.02
TRAINING_AT_MOST = 0.50

LEVELS = {"target_sparsity": [0.5, 0.625, 0.75, 0.875], "number_of_clusters": [16, 8, 4]}
TEMPLATES = ["ptq", "prune>pqat", "cluster>cqat", "prune>cluster>pcqat"]


def write_inputs(name: str, workdir: str) -> dict:
    """The workload's data and trained model; returns the config's data and base_model."""
    if name == "digits":
        from collabopt.components.core.data import dataset_from_arrays
        from collabopt.components.core.qat import save_model
        from collabopt.pipelines.demo.data import DIGITS_SPEC, load_digits_arrays, write_digits_examples
        from collabopt.pipelines.demo.model import train_digits_cnn

        write_digits_examples(os.path.join(workdir, "data"))
        (x, y), _ = load_digits_arrays()
        model = train_digits_cnn(dataset_from_arrays(x, y, batch_size=32, shuffle=True), epochs=15)
        save_model(model, os.path.join(workdir, "model"))
        data = {"examples": os.path.join(workdir, "data"), "feature_key": DIGITS_SPEC.feature_key,
                "label_key": DIGITS_SPEC.label_key,
                "feature_shape": list(DIGITS_SPEC.feature_shape)}
        return {"data": data, "base_model": {"path": os.path.join(workdir, "model")}}
    from collabopt.pipelines import zoo

    written = zoo.write_workload(name, workdir)
    return {"data": written.data_config(), "base_model": {"path": written.model_path}}


def config(inputs: dict, workdir: str, mode: str) -> str:
    import yaml

    raw = {
        "pipeline_name": f"bench-{mode}",
        "pipeline_root": os.path.join(workdir, mode, "pipeline_root"),
        "metadata": os.path.join(workdir, mode, "metadata.sqlite"),
        "serving_dir": os.path.join(workdir, mode, "serving"),
        **inputs,
        "leaves": TEMPLATES,
        "pruning": {"target_sparsity": LEVELS["target_sparsity"]},
        "clustering": {"number_of_clusters": LEVELS["number_of_clusters"]},
        "targets": [{"accelerator_config": "ethos-u55-128"}],
        "thresholds": {"max_accuracy_drop": 0.01},
        "objective": "latency",
        "mode": mode,
    }
    os.makedirs(os.path.join(workdir, mode), exist_ok=True)
    path = os.path.join(workdir, mode, "pipeline.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f, sort_keys=False)
    return path


def measure(config_path: str) -> dict:
    from ml_metadata.proto import metadata_store_pb2

    from collabopt.pipelines.config import load_config
    from collabopt.pipelines.metadata.read import read_leaves
    from collabopt.pipelines.metadata.store import open_store

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "collabopt.pipelines.cli", "run", config_path],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"collabopt run {config_path} failed ({proc.returncode})")
    cfg = load_config(config_path)
    store = open_store(cfg.metadata)
    steps, seconds = 0, 0.0
    for context in store.get_contexts_by_type("node"):
        if not context.name.split(".", 1)[1].startswith(KERAS_STEPS):
            continue
        for e in store.get_executions_by_context(context.id):
            if e.last_known_state == metadata_store_pb2.Execution.COMPLETE:
                steps += 1
                seconds += (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000
    leaves = read_leaves(cfg.metadata)
    best = next((r for r in leaves if r.selected), None)
    return {
        "wall_s": round(wall, 1), "keras_steps": steps, "training_s": round(seconds, 1),
        "leaves_evaluated": len(leaves),
        "best": None if best is None else {
            "path": best.path, "int8_accuracy": best.int8_accuracy,
            "accuracy_drop": best.accuracy_drop, "gzip_bytes": best.gzip_bytes,
            "inference_ms": best.vela[0]["inference_ms"] if best.vela else None},
    }


def compare(grid: dict, search: dict) -> dict:
    g, s = grid["best"], search["best"]
    objective_ratio = (s["inference_ms"] / g["inference_ms"]) if g and s else None
    training_ratio = search["training_s"] / grid["training_s"] if grid["training_s"] else None
    return {
        "objective_ratio": None if objective_ratio is None else round(objective_ratio, 4),
        "gzip_ratio": round(s["gzip_bytes"] / g["gzip_bytes"], 4) if g and s else None,
        "accuracy_delta": round(s["int8_accuracy"] - g["int8_accuracy"], 4) if g and s else None,
        "keras_steps_ratio": round(search["keras_steps"] / grid["keras_steps"], 3),
        "training_ratio": None if training_ratio is None else round(training_ratio, 3),
        "wall_ratio": round(search["wall_s"] / grid["wall_s"], 3),
        "goal_met": {
            "objective_within_2pct": objective_ratio is not None
                                     and objective_ratio <= 1 + OBJECTIVE_WITHIN,
            "training_at_most_50pct": training_ratio is not None
                                      and training_ratio <= TRAINING_AT_MOST,
        },
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| workload | grid best (ms, gzip B, acc) | search best (ms, gzip B, acc) | objective "
        "search/grid | fine-tuning steps search/grid | training time search/grid | wall "
        "search/grid | goals met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        g, s, c = r["grid"]["best"], r["search"]["best"], r["comparison"]

        def leaf(b):
            return "none" if b is None else (f"`{b['path']}` {b['inference_ms']:.4f}, "
                                             f"{b['gzip_bytes']:,}, {b['int8_accuracy']:.3f}")
        met = all(c["goal_met"].values())
        lines.append(
            f"| {r['workload']} | {leaf(g)} | {leaf(s)} | {c['objective_ratio']} | "
            f"{r['search']['keras_steps']}/{r['grid']['keras_steps']} "
            f"({c['keras_steps_ratio']}) | {c['training_ratio']} | {c['wall_ratio']} | "
            f"{'yes' if met else 'no: ' + ', '.join(k for k, v in c['goal_met'].items() if not v)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="digits,cnn_1d")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    results = []
    for name in args.workloads.split(","):
        workdir = args.workdir and os.path.join(args.workdir, name) or tempfile.mkdtemp(
            prefix=f"collabopt-search-{name}-")
        os.makedirs(workdir, exist_ok=True)
        inputs = write_inputs(name, workdir)
        grid = measure(config(inputs, workdir, "exhaustive"))
        print(f"{name} grid: {json.dumps(grid)}", flush=True)
        search = measure(config(inputs, workdir, "search"))
        print(f"{name} search: {json.dumps(search)}", flush=True)
        results.append({"workload": name, "levels": LEVELS, "leaves": TEMPLATES,
                        "grid": grid, "search": search, "comparison": compare(grid, search)})
    report = {"cores": os.cpu_count(), "goals": {
        "objective_within": OBJECTIVE_WITHIN, "training_at_most": TRAINING_AT_MOST},
        "results": results,
        "goal_met": all(all(r["comparison"]["goal_met"].values()) for r in results)}
    table = markdown(results)
    write_results(args.out, "search", report, {"search": table})
    print(table)


if __name__ == "__main__":
    main()
