"""Benchmark: the seeds' tables — every technique of the deployment tree on reference workloads.

For each workload (the digits demo CNN, a DS-CNN keyword-spotting-style network and MobileNetV1
alpha 0.25 on 32x32x3 digits, both from `collabopt.pipelines.zoo`; all data generated or shipped
with scikit-learn) the trained base model goes through the core functions directly — no
pipeline — at the levels below, with core's default fine-tuning (`TrainingParams()`):

    baseline            ptq                         post-training int8 quantization
    pruned              prune75>ptq                 75 % sparsity, then PTQ
    clustered           cluster8>ptq                8 clusters per kernel, then PTQ
    clustered/channel   cluster8>ptq (per channel)  8 clusters per output channel, then PTQ
    QAT                 qat
    PQAT                prune75>pqat
    CQAT                cluster8>cqat
    PCQAT               prune50>cluster16>pcqat and prune75>cluster8>pcqat

Each leaf is measured as the TFMOT guides measure it, plus what they do not: fp32 (Keras) and int8
(.tflite) accuracy on the eval split, `.tflite` and gzip bytes (and % of the int8 PTQ baseline),
Vela's inference time, SRAM and flash (DRAM on the Dedicated_Sram systems) on ethos-u55-128,
ethos-u65-256 and ethos-u85-256 (Vela's default system config of each), and the tensor arena
TensorFlow Lite for Microcontrollers needs (core/tflm.py).

Goal per workload (`goal_met` in the JSON; the seeds' headline is PCQAT on DS-CNN-L, -60.2 % gzip
at -1.27 pt): the best PCQAT leaf >= 65 % smaller (gzip) and >= 60 % faster on U55-128 than int8
PTQ at <= 1 pt int8 accuracy drop. "Best": the smallest (gzip) PCQAT leaf within the accuracy
budget, else the most accurate one. A missed goal says by how much.

Writes `benchmarks/results/compression.json`, `compression.md` (every table),
`compression_summary.md` (one row per workload, for README.md) and `compression.png` (gzip size
against U55 latency, both as % of PTQ, with the goal region). Not a test; about half an hour on
2 cores.

    .venv/bin/python benchmarks/compression.py [--workloads digits,ds_cnn,mobilenet_v1] [--out DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Optional

from results_files import write_results  # benchmarks/ is the script's directory

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = ("digits", "ds_cnn", "mobilenet_v1")
TARGETS = ("ethos-u55-128", "ethos-u65-256", "ethos-u85-256")
GOAL_TARGET = "ethos-u55-128"
GOAL = {"min_gzip_reduction": 0.65, "min_u55_time_reduction": 0.60, "max_accuracy_drop": 0.01}
SEED = 0


@dataclasses.dataclass(frozen=True)
class LeafSpec:
    """One row: `steps` are applied to the base model in order ('prune:0.75', 'cluster:8',
    'cluster_pc:8', 'qat:<mode>'); the row ends in PTQ unless its last step is QAT."""

    row: str
    steps: tuple[str, ...]

    @property
    def path(self) -> str:
        from collabopt.components.core.leaves import cluster_step, prune_step

        names = []
        for step in self.steps:
            kind, _, level = step.partition(":")
            if kind == "prune":
                names.append(prune_step(float(level)))
            elif kind in ("cluster", "cluster_pc"):
                names.append(cluster_step(int(level)) + ("pc" if kind == "cluster_pc" else ""))
            else:
                names.append(level)
        if not self.steps or not self.steps[-1].startswith("qat:"):
            names.append("ptq")
        return ">".join(names)


LEAVES = (
    LeafSpec("baseline", ()),
    LeafSpec("pruned", ("prune:0.75",)),
    LeafSpec("clustered", ("cluster:8",)),
    LeafSpec("clustered per channel", ("cluster_pc:8",)),
    LeafSpec("QAT", ("qat:qat",)),
    LeafSpec("PQAT", ("prune:0.75", "qat:pqat")),
    LeafSpec("CQAT", ("cluster:8", "qat:cqat")),
    LeafSpec("PCQAT", ("prune:0.5", "cluster:16", "qat:pcqat")),
    LeafSpec("PCQAT", ("prune:0.75", "cluster:8", "qat:pcqat")),
)


# --- workloads ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Workload:
    name: str
    description: str
    model: Any
    train: tuple          # (x, y)
    eval: tuple


def load_workload(name: str) -> Workload:
    from collabopt.components.core.data import dataset_from_arrays

    if name == "digits":
        from collabopt.pipelines.demo.data import load_digits_arrays
        from collabopt.pipelines.demo.model import train_digits_cnn

        train, evaluation = load_digits_arrays()
        model = train_digits_cnn(dataset_from_arrays(*train, batch_size=32, shuffle=True),
                                 epochs=15, seed=SEED)
        return Workload(name, "digits demo CNN (Conv2D x3, Dense x2) on 8x8 digits", model,
                        train, evaluation)
    from collabopt.pipelines import zoo

    trained = zoo.train(name, seed=SEED)
    train, evaluation = trained.arrays
    return Workload(name, zoo.ZOO[name].description, trained.model, train, evaluation)


# --- one leaf ----------------------------------------------------------------------------------

class TreeRunner:
    """Builds each prefix of the tree once (a pruned model feeds PTQ, PQAT and clustering)."""

    def __init__(self, workload: Workload):
        from collabopt.components.core.data import (dataset_from_arrays,
                                                   train_and_validation_from_arrays)
        from collabopt.components.core.training import TrainingParams

        self.workload = workload
        self.training = TrainingParams()
        # Fine-tuning until recovered stops on a slice of the train split, as in the pipeline;
        # calibration and the baseline use the whole train split.
        self.fit_ds, self.validation_ds = train_and_validation_from_arrays(
            *workload.train, self.training.validation_fraction, batch_size=32, seed=SEED)
        self.train_ds = dataset_from_arrays(*workload.train, batch_size=32, shuffle=True,
                                            seed=SEED)
        self.eval_ds = dataset_from_arrays(*workload.eval, batch_size=64)
        self.models: dict[tuple[str, ...], Any] = {(): workload.model}
        self.seconds: dict[tuple[str, ...], float] = {(): 0.0}

    def model(self, steps: tuple[str, ...]):
        if steps in self.models:
            return self.models[steps]
        from collabopt.components.core import clustering, pruning, qat
        from collabopt.components.core.keras_compat import keras
        from collabopt.components.core.training import aiming_at_least, fine_tuning_of

        source = self.model(steps[:-1])
        kind, _, level = steps[-1].partition(":")
        keras.utils.set_random_seed(SEED)
        start = time.perf_counter()
        pruned_before = any(s.startswith("prune:") for s in steps[:-1])
        # As the pipeline does (keras_step.fine_tuning_params): a step aims at least at the
        # reference its input model recorded, the base model's.
        record = fine_tuning_of(source)
        training = aiming_at_least(self.training, record and record.reference_accuracy)
        fit = dict(training=training, validation_ds=self.validation_ds)
        if kind == "prune":
            model = pruning.prune(source, self.fit_ds,
                                  pruning.PruningParams(target_sparsity=float(level)), **fit)
        elif kind in ("cluster", "cluster_pc"):
            model = clustering.cluster(source, self.fit_ds, clustering.ClusteringParams(
                number_of_clusters=int(level), preserve_sparsity=pruned_before,
                cluster_per_channel=kind == "cluster_pc"), **fit)
        else:
            model = qat.quantize_aware_train(source, self.fit_ds, level, **fit)
        self.seconds[steps] = self.seconds[steps[:-1]] + time.perf_counter() - start
        self.models[steps] = model
        return model

    def measure(self, spec: LeafSpec) -> dict[str, Any]:
        from collabopt.components.core import metrics, tflite, tflm
        from collabopt.components.core.errors import CollaboptError
        from collabopt.components.core.training import keras_accuracy

        row: dict[str, Any] = {"row": spec.row, "leaf": spec.path, "failed": None}
        try:
            model = self.model(spec.steps)
            row["fp32_accuracy"] = round(keras_accuracy(model, self.eval_ds), 4)
            data = tflite.convert(model, "int8", representative_data=self.train_ds)
        except CollaboptError as exc:
            row["failed"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            return row
        row["fine_tuning_s"] = round(self.seconds[spec.steps], 1)
        row["int8_accuracy"] = round(metrics.tflite_accuracy(data, self.eval_ds), 4)
        row["tflite_bytes"] = len(data)
        row["gzip_bytes"] = metrics.gzip_size(data)
        structure = metrics.tflite_weight_structure(data)
        row["sparsity"] = round(structure.sparsity, 3) if structure.kernels else None
        row["max_unique_per_channel"] = (structure.max_unique_per_channel
                                         if structure.kernels else None)
        micro = tflm.measure(data)
        row["arena_bytes"] = micro.arena_bytes
        row["tflm_unsupported_ops"] = list(micro.unsupported_ops)
        row["vela"] = {target: vela_figures(data, target) for target in TARGETS}
        return row


def vela_figures(data: bytes, target: str) -> dict[str, Any]:
    from collabopt.components.core import vela
    from collabopt.components.core.errors import VelaCompileError

    options = vela.VelaOptions(accelerator_config=target)
    with tempfile.TemporaryDirectory(prefix="collabopt-bench-vela-") as out:
        try:
            summary = vela.compile_model(data, options, out).summary
        except VelaCompileError as exc:
            return {"failed": " ".join(str(exc).split())[:300]}
    return {"system_config": options.system_config, "memory_mode": options.memory_mode,
            "inference_ms": round(summary.inference_ms, 5), "sram_bytes": summary.sram_bytes,
            "flash_bytes": summary.flash_bytes, "dram_bytes": summary.dram_bytes,
            "npu_ops": summary.npu_ops, "cpu_ops": summary.cpu_ops}


# --- ratios and the goal -----------------------------------------------------------------------

def _ratio(a, b) -> Optional[float]:
    return None if a is None or not b else round(a / b, 4)


def add_ratios(rows: list[dict]) -> None:
    """Each row's bytes and U55 time as fractions of the PTQ baseline's, and its accuracy drop."""
    base = rows[0]
    for row in rows:
        if row["failed"]:
            continue
        row["accuracy_drop"] = round(base["int8_accuracy"] - row["int8_accuracy"], 4)
        row["tflite_ratio"] = _ratio(row["tflite_bytes"], base["tflite_bytes"])
        row["gzip_ratio"] = _ratio(row["gzip_bytes"], base["gzip_bytes"])
        for target in TARGETS:
            row["vela"][target]["time_ratio"] = _ratio(
                row["vela"][target].get("inference_ms"), base["vela"][target].get("inference_ms"))


def goal(rows: list[dict]) -> dict[str, Any]:
    """The best PCQAT leaf against the goal; what it missed and by how much."""
    candidates = [r for r in rows if r["leaf"].endswith("pcqat") and not r["failed"]]
    if not candidates:
        return {"leaf": None, "met": False, "misses": ["no PCQAT leaf could be built"]}
    within = [r for r in candidates if r["accuracy_drop"] <= GOAL["max_accuracy_drop"] + 1e-9]
    best = (min(within, key=lambda r: r["gzip_ratio"]) if within
            else min(candidates, key=lambda r: r["accuracy_drop"]))
    gzip_reduction = 1 - best["gzip_ratio"]
    time_ratio = best["vela"][GOAL_TARGET].get("time_ratio")
    time_reduction = None if time_ratio is None else 1 - time_ratio
    misses = []
    if gzip_reduction < GOAL["min_gzip_reduction"]:
        misses.append(f"gzip {gzip_reduction:.1%} smaller, {GOAL['min_gzip_reduction'] - gzip_reduction:.1%}"
                      f" short of {GOAL['min_gzip_reduction']:.0%}")
    if time_reduction is None:
        misses.append("no U55-128 time was measured")
    elif time_reduction < GOAL["min_u55_time_reduction"]:
        misses.append(f"U55-128 {time_reduction:.1%} faster, "
                      f"{GOAL['min_u55_time_reduction'] - time_reduction:.1%} short of "
                      f"{GOAL['min_u55_time_reduction']:.0%}")
    if best["accuracy_drop"] > GOAL["max_accuracy_drop"] + 1e-9:
        misses.append(f"accuracy drop {100 * best['accuracy_drop']:.2f} pt, "
                      f"{100 * (best['accuracy_drop'] - GOAL['max_accuracy_drop']):.2f} pt over "
                      f"{100 * GOAL['max_accuracy_drop']:.0f} pt")
    return {"leaf": best["leaf"], "gzip_reduction": round(gzip_reduction, 4),
            "u55_time_reduction": None if time_reduction is None else round(time_reduction, 4),
            "accuracy_drop": best["accuracy_drop"], "met": not misses, "misses": misses}


# --- output ------------------------------------------------------------------------------------

def _f(value, spec: str, none: str = "–") -> str:
    return none if value is None else format(value, spec)


def _pct(ratio) -> str:
    return "–" if ratio is None else f"{100 * ratio:.0f} %"


def markdown(result: dict) -> str:
    lines = [f"Every technique on {len(result['workloads'])} reference workloads, through the core "
             f"functions at the levels in the leaf names (one run of `benchmarks/compression.py` "
             f"on this {result['cores']}-core machine; fine-tuning: core's defaults, "
             f"{result['training']}). Sizes and U55 time as % of the int8 PTQ baseline.", ""]
    for w in result["workloads"]:
        lines += [f"### {w['name']}", "", f"{w['description']}; {w['parameters']:,} parameters, "
                  f"fp32 eval accuracy {w['base_fp32_accuracy']:.4f}.", "",
                  "| row | leaf | fp32 acc | int8 acc | drop (pt) | .tflite B | % | gzip B | % | "
                  "arena B |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in w["rows"]:
            if r["failed"]:
                lines.append(f"| {r['row']} | {r['leaf']} | failed: {r['failed']} |"
                             " | | | | | | |")
                continue
            arena = (_f(r["arena_bytes"], ",") if r["arena_bytes"] is not None
                     else "no TFLM: " + ", ".join(r["tflm_unsupported_ops"]))
            lines.append(
                f"| {r['row']} | {r['leaf']} | {r['fp32_accuracy']:.4f} | "
                f"{r['int8_accuracy']:.4f} | {100 * r['accuracy_drop']:+.2f} | "
                f"{r['tflite_bytes']:,} | {_pct(r['tflite_ratio'])} | {r['gzip_bytes']:,} | "
                f"{_pct(r['gzip_ratio'])} | {arena} |")
        lines += ["", "| leaf | " + " | ".join(f"{t} ms | % | SRAM B | flash/DRAM B"
                                               for t in TARGETS) + " |",
                  "|---|" + "---|---|---|---|" * len(TARGETS)]
        for r in w["rows"]:
            if r["failed"]:
                continue
            cells = []
            for target in TARGETS:
                v = r["vela"][target]
                if v.get("failed"):
                    cells += ["failed", "", "", ""]
                    continue
                off_chip = (f"{v['dram_bytes']:,} (DRAM)" if v["dram_bytes"] and not v["flash_bytes"]
                            else f"{v['flash_bytes']:,}")
                cells += [f"{v['inference_ms']:.4f}", _pct(v["time_ratio"]),
                          f"{v['sram_bytes']:,}", off_chip]
            lines.append(f"| {r['leaf']} | " + " | ".join(cells) + " |")
        lines += ["", goal_sentence(w), ""]
    return "\n".join(lines).rstrip() + "\n"


def goal_sentence(w: dict) -> str:
    g = w["goal"]
    if not g["leaf"]:
        return f"**Goal not met**: {'; '.join(g['misses'])}."
    head = (f"best PCQAT leaf {g['leaf']}: {g['gzip_reduction']:.1%} smaller (gzip), "
            f"{_f(g['u55_time_reduction'], '.1%')} faster on U55-128, "
            f"{100 * g['accuracy_drop']:+.2f} pt int8 accuracy")
    if g["met"]:
        return f"**Goal met** ({head})."
    return f"**Goal missed** ({head}): {'; '.join(g['misses'])}."


def summary_markdown(result: dict) -> str:
    lines = ["| workload | int8 PTQ acc | best PCQAT leaf | gzip (vs PTQ) | U55-128 time "
             "(vs PTQ) | drop (pt) | arena (vs PTQ) | goal |", "|---|---|---|---|---|---|---|---|"]
    for w in result["workloads"]:
        g, rows = w["goal"], {r["leaf"]: r for r in w["rows"]}
        base = w["rows"][0]
        if not g["leaf"]:
            lines.append(f"| {w['name']} | {_f(base.get('int8_accuracy'), '.3f')} | – | – | – | "
                         f"– | – | missed: {'; '.join(g['misses'])} |")
            continue
        best = rows[g["leaf"]]
        verdict = "met" if g["met"] else "missed: " + "; ".join(g["misses"])
        lines.append(
            f"| {w['name']} | {base['int8_accuracy']:.3f} | {g['leaf']} | "
            f"{best['gzip_ratio']:.2f}x | {_f(best['vela'][GOAL_TARGET].get('time_ratio'), '.2f')}x"
            f" | {100 * g['accuracy_drop']:+.2f} | "
            f"{_f(_ratio(best['arena_bytes'], base['arena_bytes']), '.2f')}x | {verdict} |")
    lines += ["", "Goal: the best PCQAT leaf >= 65 % smaller (gzip) and >= 60 % faster on "
              "Ethos-U55-128 than int8 PTQ at <= 1 pt accuracy drop. Every leaf, target and "
              "the tensor arena: [benchmarks/results/compression.md]"
              "(benchmarks/results/compression.md).",
              "", "![Size against U55 latency per leaf, as % of int8 PTQ]"
              "(benchmarks/results/compression.png)"]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> None:
    """Per workload: gzip bytes against U55-128 time (both % of PTQ), the goal's region shaded;
    green: within 1 pt of PTQ's accuracy; each point numbered, the numbers listed below."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Rectangle

    from collabopt.pipelines.report import _label_points

    workloads = result["workloads"]
    fig, axes = plt.subplots(1, len(workloads), figsize=(5.4 * len(workloads), 7.2),
                             squeeze=False)
    for ax, w in zip(axes[0], workloads):
        ax.add_patch(Rectangle((0, 0), 100 * (1 - GOAL["min_gzip_reduction"]),
                               100 * (1 - GOAL["min_u55_time_reduction"]), color="#2e7d32",
                               alpha=0.12, lw=0))
        ax.text(2, 2, "goal", color="#2e7d32", fontsize=9)
        labels, points = [], []
        for number, r in enumerate(w["rows"], start=1):
            if r["failed"] or r["vela"][GOAL_TARGET].get("time_ratio") is None:
                continue
            x, y = 100 * r["gzip_ratio"], 100 * r["vela"][GOAL_TARGET]["time_ratio"]
            ok = r["accuracy_drop"] <= GOAL["max_accuracy_drop"] + 1e-9
            best = r["leaf"] == w["goal"]["leaf"]
            color = "#2e7d32" if ok else "#c62828"
            ax.scatter([x], [y], s=240 if best else 55, marker="*" if best else "o", color=color,
                       edgecolor="black", lw=0.6, zorder=3,
                       label=f"{number}  {r['leaf']}  ({100 * r['accuracy_drop']:+.1f} pt)")
            labels.append(str(number))
            points.append((x, y))
        _label_points(ax, labels, points)
        ax.set_xlim(0, 112)
        ax.set_ylim(0, 112)
        ax.set_xlabel("gzip bytes, % of int8 PTQ")
        ax.set_ylabel("Ethos-U55-128 inference time, % of int8 PTQ")
        ax.set_title(f"{w['name']}: goal {'met' if w['goal_met'] else 'missed'}", fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False,
                  title="int8 accuracy drop vs PTQ (green: <= 1 pt; star: best PCQAT)",
                  title_fontsize=7.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_workload(name: str) -> dict:
    start = time.perf_counter()
    workload = load_workload(name)
    runner = TreeRunner(workload)
    from collabopt.components.core.training import keras_accuracy

    base_accuracy = keras_accuracy(workload.model, runner.eval_ds)
    rows = []
    for spec in LEAVES:
        row = runner.measure(spec)
        print(f"  {name} {row['leaf']}: {json.dumps({k: v for k, v in row.items() if k != 'vela'})}",
              flush=True)
        rows.append(row)
    add_ratios(rows)
    result = {"name": name, "description": workload.description,
              "parameters": int(workload.model.count_params()),
              "base_fp32_accuracy": round(base_accuracy, 4), "rows": rows, "goal": goal(rows),
              "seconds": round(time.perf_counter() - start, 1)}
    result["goal_met"] = result["goal"]["met"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--from-json", action="store_true",
                        help="rewrite the Markdown and the plot from OUT/compression.json")
    args = parser.parse_args()
    if args.from_json:
        with open(os.path.join(args.out, "compression.json")) as f:
            write(json.load(f), args.out)
        return
    from collabopt.components.core.training import TrainingParams

    training = TrainingParams()
    result = {"cores": os.cpu_count(), "python": platform.python_version(),
              "training": (f"until recovered (at most {training.max_epochs} epochs, patience "
                           f"{training.patience}, {training.validation_fraction:.0%} of the train "
                           f"split held out) at learning rate {training.learning_rate:g}"),
              "levels": [dataclasses.asdict(spec) | {"leaf": spec.path} for spec in LEAVES],
              "targets": list(TARGETS), "goal": GOAL, "workloads": []}
    os.makedirs(args.out, exist_ok=True)
    for name in args.workloads.split(","):
        print(f"{name} ...", flush=True)
        result["workloads"].append(run_workload(name))
        result["goal_met"] = all(w["goal_met"] for w in result["workloads"])
        write(result, args.out)   # after each workload: a crash keeps what was measured
    print(open(os.path.join(args.out, "compression_summary.md")).read())


def write(result: dict, out: str) -> None:
    write_results(out, "compression", result, {"compression": markdown(result),
                                               "compression_summary": summary_markdown(result)})
    plot(result, os.path.join(out, "compression.png"))


if __name__ == "__main__":
    sys.exit(main())
