"""Benchmark: what the pipeline itself costs over a bare TFMOT script doing the same work.

One deployment tree on the digits demo data — leaves `ptq`, `prune50>pqat`, `cluster16>cqat`,
`prune50>cluster16>pcqat` (independent branches after the base model), one target
(ethos-u55-128), `training.epochs` 2 — run three ways, alternating within one run so all three
see the same machine load:

- `bare`: one Python script calling the core functions directly (collabopt.components.core:
  prune, cluster, QAT, convert, accuracy, TFLM arena, Vela, select) with the same leaves, data
  (the same TFRecords), levels, epochs and calibration samples, shared prefixes built once;
- `local`: `collabopt run` with the LocalDagRunner (a fresh store each time);
- `beam`: `collabopt run --runner beam` (BeamDagRunner on Beam's DirectRunner).

Then: a cached re-run (`collabopt run` of the unchanged config on the last local store) against
the first run of that store; `beam` once more with `beam_pipeline_args`
`--direct_running_mode=multi_processing --direct_num_workers=2` (do both cores help?); and the
local pipeline on three model sizes (the digits CNN at 1x, 2x, 4x width: about 4x parameters
each) for time and peak memory to extrapolate from.

Each run is its own child process; wall time, CPU time (user + system: CPU / wall is how many
of the cores it kept busy) and peak RSS (largest process of its tree, from wait4) are its own.
Goals (`goal_met` in the JSON): pipeline (local) <= 1.25x the bare script's wall time; cached
re-run <= 10 % of the first run. Writes `benchmarks/results/pipeline_cost.json` and
`pipeline_cost.md` (and `pipeline_cost_summary.md`, a few lines for README.md). Not a test; about 25 minutes on 2 cores.

    .venv/bin/python benchmarks/pipeline_cost.py [--repeats 2] [--out DIR] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from results_files import write_results  # benchmarks/ is the script's directory

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
LEAVES = ["ptq", "prune>pqat", "cluster>cqat", "prune>cluster>pcqat"]
SPARSITY, CLUSTERS, EPOCHS, LEARNING_RATE, BATCH = 0.5, 16, 2, 1e-4, 32
TARGET = "ethos-u55-128"
WIDTHS = (1, 2, 4)
PIPELINE_OVER_BARE_AT_MOST = 1.25
CACHED_OVER_FIRST_AT_MOST = 0.10
MULTI_PROCESSING_ARGS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


# --- inputs ------------------------------------------------------------------------------------

def build_cnn(width: int):
    """The digits demo CNN with every layer `width` times as wide (width 1 is the demo's)."""
    from collabopt.components.core.keras_compat import keras

    inputs = keras.Input(shape=(8, 8, 1), name="image")
    x = keras.layers.Conv2D(16 * width, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(32 * width, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(32 * width, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64 * width, activation="relu", name="dense1")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def write_inputs(workdir: str) -> dict:
    """Digits examples and the base model at each width (trained 15 epochs); parameter counts."""
    from collabopt.components.core.data import dataset_from_arrays
    from collabopt.components.core.keras_compat import keras
    from collabopt.components.core.qat import save_model
    from collabopt.pipelines.demo.data import load_digits_arrays, write_digits_examples

    write_digits_examples(os.path.join(workdir, "data"))
    (x, y), _ = load_digits_arrays()
    params = {}
    for width in WIDTHS:
        keras.utils.set_random_seed(0)
        model = build_cnn(width)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(dataset_from_arrays(x, y, batch_size=32, shuffle=True), epochs=15, verbose=0)
        save_model(model, os.path.join(workdir, f"model_w{width}"))
        params[width] = int(model.count_params())
    return params


def write_config(workdir: str, run_dir: str, width: int, beam_args=None) -> str:
    import yaml

    config = {
        "pipeline_name": "cost", "pipeline_root": os.path.join(run_dir, "pipeline_root"),
        "metadata": os.path.join(run_dir, "metadata.sqlite"),
        "serving_dir": os.path.join(run_dir, "serving"),
        "data": {"examples": os.path.join(workdir, "data"), "feature_key": "image",
                 "label_key": "label", "feature_shape": [8, 8, 1]},
        "base_model": {"path": os.path.join(workdir, f"model_w{width}")},
        "leaves": LEAVES,
        "training": {"epochs": EPOCHS, "learning_rate": LEARNING_RATE, "batch_size": BATCH},
        "pruning": {"target_sparsity": SPARSITY}, "clustering": {"number_of_clusters": CLUSTERS},
        "targets": [{"accelerator_config": TARGET}],
        "thresholds": {"max_accuracy_drop": 0.03},
    }
    if beam_args:
        config["beam_pipeline_args"] = beam_args
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "pipeline.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return path


# --- the bare script ---------------------------------------------------------------------------

def bare(workdir: str, width: int) -> dict:
    """The tree's work with the core functions alone (what a user's own script would do)."""
    from collabopt.components.core import (clustering, data, metrics, pruning, qat, selection,
                                           tflite, tflm, vela)
    from collabopt.components.core.errors import CollaboptError
    from collabopt.components.core.leaves import expand
    from collabopt.components.core.training import TrainingParams

    spec = data.FeatureSpec("image", "label", (8, 8, 1))
    train_ds = data.dataset_from_tfrecords(os.path.join(workdir, "data", "train"), spec,
                                           batch_size=BATCH, shuffle=True)
    eval_ds = data.dataset_from_tfrecords(os.path.join(workdir, "data", "eval"), spec,
                                          batch_size=BATCH)
    training = TrainingParams(epochs=EPOCHS, learning_rate=LEARNING_RATE)
    models = {"": qat.load_model(os.path.join(workdir, f"model_w{width}"))}

    def model_for(leaf, n):
        prefix = ">".join(leaf.steps[:n])
        if prefix not in models:
            source = model_for(leaf, n - 1)
            technique = leaf.template.split(">")[n - 1]
            if technique == "prune":
                models[prefix] = pruning.prune(
                    source, train_ds, pruning.PruningParams(target_sparsity=leaf.target_sparsity),
                    training)
            else:
                models[prefix] = clustering.cluster(source, train_ds, clustering.ClusteringParams(
                    number_of_clusters=leaf.number_of_clusters,
                    preserve_sparsity="prune" in leaf.template.split(">")[:n - 1]), training)
        return models[prefix]

    measured, baseline = [], [None]

    def one_leaf(leaf) -> selection.LeafMetrics:
        model = model_for(leaf, len(leaf.steps) - 1)
        if leaf.steps[-1] != "ptq":
            model = qat.quantize_aware_train(model, train_ds, leaf.steps[-1], training)
        tflite_bytes = tflite.convert(model, "int8", data.representative_dataset(train_ds, 200))
        accuracy = metrics.tflite_accuracy(tflite_bytes, eval_ds)
        metrics.gzip_size(tflite_bytes)
        metrics.tflite_weight_structure(tflite_bytes)
        arena = tflm.measure(tflite_bytes).arena_bytes
        summary = vela.compile_model(tflite_bytes, vela.VelaOptions(TARGET),
                                     os.path.join(out, leaf.key)).summary
        if leaf.is_baseline:
            baseline[0] = accuracy
        return selection.LeafMetrics(
            leaf.path, accuracy, len(tflite_bytes),
            None if leaf.is_baseline else baseline[0] - accuracy, summary.inference_ms,
            summary.flash_bytes, summary.sram_bytes, arena_bytes=arena)

    with tempfile.TemporaryDirectory(prefix="collabopt-bare-") as out:
        for leaf in expand(LEAVES, [SPARSITY], [CLUSTERS]):
            try:
                measured.append(one_leaf(leaf))
            except CollaboptError as exc:   # as the pipeline does: a failed leaf, the rest go on
                measured.append(selection.LeafMetrics(leaf.path, 0.0, 0, failure=str(exc)))
    chosen = selection.select(measured, {"max_accuracy_drop": 0.03})
    return {"selected": chosen.selected.path if chosen.selected else None,
            "failed": [leaf.path for leaf in measured if leaf.failed]}


# --- timing ------------------------------------------------------------------------------------

def timed(args: list[str], log: str) -> dict:
    """Runs a command in a child process: its wall and CPU seconds and peak RSS (wait4)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        with open(log) as f:
            sys.stderr.write(f.read()[-4000:])
        raise SystemExit(f"{' '.join(args)} failed with exit code {proc.returncode} (log: {log})")
    return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "cores_busy": round(
                (usage.ru_utime + usage.ru_stime) / wall, 2)}


def run_pipeline(workdir: str, name: str, width: int = 1, runner: str = "local",
                 beam_args=None, fresh: bool = True) -> dict:
    run_dir = os.path.join(workdir, "runs", name)
    if fresh and os.path.exists(run_dir):
        shutil.rmtree(run_dir)
    config = write_config(workdir, run_dir, width, beam_args)
    cli = [sys.executable, "-m", "collabopt.pipelines.cli", "run", config, "--runner", runner]
    result = timed(cli, os.path.join(workdir, f"{name}.log"))
    result["executions"] = executions(os.path.join(run_dir, "metadata.sqlite"))
    return result


def run_bare(workdir: str, name: str, width: int = 1) -> dict:
    return timed([sys.executable, os.path.abspath(__file__), "--bare", workdir, "--width",
                  str(width)], os.path.join(workdir, f"{name}.log"))


def executions(metadata: str) -> dict[str, int]:
    """Executions of the store's latest run by state (COMPLETE, CACHED)."""
    from ml_metadata.proto import metadata_store_pb2

    from collabopt.pipelines.metadata.store import open_store

    store = open_store(metadata, readonly=True)
    latest = max(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.create_time_since_epoch)
    states: dict[str, int] = {}
    for execution in store.get_executions_by_context(latest.id):
        name = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
        states[name] = states.get(name, 0) + 1
    return states


def step_seconds(metadata: str) -> dict[str, float]:
    """Seconds per component type in the store's first run (its executions' start to end)."""
    from collabopt.pipelines.metadata.store import open_store

    store = open_store(metadata, readonly=True)
    first = min(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.create_time_since_epoch)
    types = {t.id: t.name.rsplit(".", 1)[-1] for t in store.get_execution_types()}
    seconds: dict[str, float] = {}
    for e in store.get_executions_by_context(first.id):
        name = types[e.type_id]
        seconds[name] = seconds.get(name, 0.0) + (
            e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000
    return {k: round(v, 1) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}


def mean(runs: list[dict], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


# --- output ------------------------------------------------------------------------------------

def markdown(r: dict) -> str:
    a = r["alternating"]
    lines = [f"The pipeline against a bare script doing the same work (digits, leaves "
             f"{', '.join(r['leaves'])}, {r['epochs']} epochs, {TARGET}; {r['repeats']} "
             f"alternating rounds on this {r['cores']}-core machine, means):", "",
             "| run | wall s | x bare | CPU s | x bare | cores busy | peak RSS MB | x bare |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ("bare", "local", "beam", "beam_multi_processing"):
        if name not in a:
            continue
        m = a[name]
        lines.append(f"| {m['label']} | {m['wall_s']:.0f} | {m['wall_over_bare']:.2f} | "
                     f"{m['cpu_s']:.0f} | {m['cpu_over_bare']:.2f} | {m['cores_busy']:.2f} | "
                     f"{m['peak_rss_mb']:.0f} | {m['rss_over_bare']:.2f} |")
    steps = r.get("local_steps_s")
    if steps:
        lines += ["", "Where a local run's time goes (seconds per component, summed over its "
                  "executions): " + ", ".join(f"{k} {v:.0f}" for k, v in steps.items()) + "."]
    c = r["cached"]
    cached = ", ".join(f"{n} {state.lower()}" for state, n in c["executions"].items())
    lines += ["", f"Re-running the unchanged config took {c['wall_s']:.0f} s, "
              f"{c['over_first']:.2f}x the first run's {c['first_wall_s']:.0f} s "
              f"(executions: {cached}).", "",
              "| model width | parameters | x params | wall s | x time | CPU s | x CPU | "
              "peak RSS MB | x RSS |", "|---|---|---|---|---|---|---|---|---|"]
    for s in r["sizes"]:
        lines.append(f"| {s['width']}x | {s['parameters']:,} | {s['params_ratio']:.1f} | "
                     f"{s['wall_s']:.0f} | {s['wall_ratio']:.2f} | {s['cpu_s']:.0f} | "
                     f"{s['cpu_s'] / r['sizes'][0]['cpu_s']:.2f} | {s['peak_rss_mb']:.0f} | "
                     f"{s['rss_ratio']:.2f} |")
    lines += ["", "Wall times on this shared machine move with other users' load (cores busy "
              "below 1 means the run waited for a core); CPU seconds are the steadier figure."]
    g = r["goals"]
    lines += ["", f"Goals: pipeline <= {PIPELINE_OVER_BARE_AT_MOST}x the bare script "
              f"({'met' if g['pipeline_over_bare']['goal_met'] else 'missed'}: "
              f"{g['pipeline_over_bare']['measured']:.2f}x); cached re-run <= "
              f"{CACHED_OVER_FIRST_AT_MOST:.0%} of the first run "
              f"({'met' if g['cached_over_first']['goal_met'] else 'missed'}: "
              f"{g['cached_over_first']['measured']:.0%})."]
    return "\n".join(lines) + "\n"


def summary_markdown(r: dict) -> str:
    """A few lines for README.md; the full tables are in pipeline_cost.md."""
    a, c, g = r["alternating"], r["cached"], r["goals"]
    local, beam = a["local"], a["beam"]
    sizes = r["sizes"]
    grown = "; ".join(f"{s['params_ratio']:.0f}x the parameters: {s['cpu_s'] / sizes[0]['cpu_s']:.2f}x "
                      f"the CPU time and {s['rss_ratio']:.2f}x the peak memory"
                      for s in sizes[1:])
    return (
        f"A `collabopt run` of a {len(r['leaves'])}-leaf tree took {local['wall_over_bare']:.2f}x "
        f"the wall time, {local['cpu_over_bare']:.2f}x the CPU time and "
        f"{local['rss_over_bare']:.2f}x the peak memory of a bare script doing the same work "
        f"(BeamDagRunner: {beam['wall_over_bare']:.2f}x, {beam['cpu_over_bare']:.2f}x, "
        f"{beam['rss_over_bare']:.2f}x). Re-running it unchanged took {c['over_first']:.2f}x the "
        f"first run. A wider model, {grown}. Goals: pipeline <= {PIPELINE_OVER_BARE_AT_MOST}x "
        f"the bare script {'met' if g['pipeline_over_bare']['goal_met'] else 'missed'}, cached "
        f"re-run <= {CACHED_OVER_FIRST_AT_MOST:.0%} "
        f"{'met' if g['cached_over_first']['goal_met'] else 'missed'}. Every figure: "
        "[benchmarks/results/pipeline_cost.md](benchmarks/results/pipeline_cost.md).\n")


def write(result: dict, out: str) -> str:
    table = markdown(result)
    write_results(out, "pipeline_cost", result, {"pipeline_cost": table,
                                                 "pipeline_cost_summary": summary_markdown(result)})
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--bare", default=None, help=argparse.SUPPRESS)   # child: the bare script
    parser.add_argument("--width", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--from-json", action="store_true",
                        help="rewrite the Markdown from OUT/pipeline_cost.json (and, with "
                             "--workdir, the per-component seconds from its stores)")
    args = parser.parse_args()
    if args.from_json:
        path = os.path.join(args.out, "pipeline_cost.json")
        with open(path) as f:
            result = json.load(f)
        for m in result["alternating"].values():
            m["cpu_over_bare"] = round(m["cpu_s"] / result["alternating"]["bare"]["cpu_s"], 3)
        if args.workdir:
            result["local_steps_s"] = step_seconds(os.path.join(
                args.workdir, "runs", f"local{result['repeats'] - 1}", "metadata.sqlite"))
        write(result, args.out)
        return
    if args.bare:
        print(json.dumps(bare(args.bare, args.width)))
        return
    workdir = args.workdir or tempfile.mkdtemp(prefix="collabopt-cost-")
    print(f"work directory: {workdir}", flush=True)
    params = write_inputs(workdir)

    runs: dict[str, list[dict]] = {"bare": [], "local": [], "beam": []}
    for i in range(args.repeats):
        for name in runs:
            result = (run_bare(workdir, f"bare{i}") if name == "bare"
                      else run_pipeline(workdir, f"{name}{i}", runner=name))
            print(f"round {i} {name}: {result}", flush=True)
            runs[name].append(result)
    multi = run_pipeline(workdir, "beam_mp", runner="beam", beam_args=MULTI_PROCESSING_ARGS)
    print(f"beam multi_processing: {multi}", flush=True)
    runs["beam_multi_processing"] = [multi]
    last_local = f"local{args.repeats - 1}"
    cached = run_pipeline(workdir, last_local, runner="local", fresh=False)
    print(f"cached: {cached}", flush=True)

    labels = {"bare": "bare script (core functions)", "local": "`collabopt run` (local)",
              "beam": "`collabopt run --runner beam`",
              "beam_multi_processing": "beam, multi_processing x2 workers"}
    bare_wall, bare_rss = mean(runs["bare"], "wall_s"), mean(runs["bare"], "peak_rss_mb")
    bare_cpu = mean(runs["bare"], "cpu_s")
    alternating = {}
    for name, results in runs.items():
        wall, rss = mean(results, "wall_s"), mean(results, "peak_rss_mb")
        alternating[name] = {
            "label": labels[name], "runs": results, "wall_s": round(wall, 1),
            "cpu_s": round(mean(results, "cpu_s"), 1),
            "cores_busy": round(mean(results, "cores_busy"), 2), "peak_rss_mb": round(rss),
            "wall_over_bare": round(wall / bare_wall, 3),
            "cpu_over_bare": round(mean(results, "cpu_s") / bare_cpu, 3),
            "rss_over_bare": round(rss / bare_rss, 3)}
    first_wall = runs["local"][-1]["wall_s"]
    cached_summary = {**cached, "first_wall_s": first_wall,
                      "over_first": round(cached["wall_s"] / first_wall, 3)}

    sizes = []
    for width in WIDTHS:
        result = (runs["local"][-1] if width == 1
                  else run_pipeline(workdir, f"width{width}", width=width))
        print(f"width {width}: {result}", flush=True)
        sizes.append({"width": width, "parameters": params[width], **result})
    for s in sizes:
        s["params_ratio"] = round(s["parameters"] / sizes[0]["parameters"], 2)
        s["wall_ratio"] = round(s["wall_s"] / sizes[0]["wall_s"], 2)
        s["rss_ratio"] = round(s["peak_rss_mb"] / sizes[0]["peak_rss_mb"], 2)

    pipeline_over_bare = alternating["local"]["wall_over_bare"]
    goals = {
        "pipeline_over_bare": {"measured": pipeline_over_bare,
                               "at_most": PIPELINE_OVER_BARE_AT_MOST,
                               "goal_met": pipeline_over_bare <= PIPELINE_OVER_BARE_AT_MOST},
        "cached_over_first": {"measured": cached_summary["over_first"],
                              "at_most": CACHED_OVER_FIRST_AT_MOST,
                              "goal_met": cached_summary["over_first"] <= CACHED_OVER_FIRST_AT_MOST},
    }
    result = {"cores": os.cpu_count(), "python": platform.python_version(), "leaves": LEAVES,
              "local_steps_s": step_seconds(os.path.join(workdir, "runs", last_local,
                                                         "metadata.sqlite")),
              "epochs": EPOCHS, "repeats": args.repeats, "alternating": alternating,
              "cached": cached_summary, "sizes": sizes, "goals": goals,
              "goal_met": all(g["goal_met"] for g in goals.values())}
    print(write(result, args.out))


if __name__ == "__main__":
    main()
