"""Benchmark: fine-tuning until recovered against a fixed budget, and the learning rate.

For zoo workloads, runs the chain prune -> sparsity-preserving cluster -> PCQAT three ways —
fixed 2 epochs at 1e-4 (the old default) and until recovered at each learning rate — and prints
each step's eval accuracy, epochs trained and stop reason, and the wall time of the chain. Not a
test; the figures chose the defaults of core.training.TrainingParams.

    .venv/bin/python benchmarks/fine_tuning.py [--workloads ds_cnn,digits_cnn] [--sparsity 0.75]
        [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _digits_cnn():
    from collabopt.components.core.data import dataset_from_arrays
    from collabopt.components.core.training import keras_accuracy
    from collabopt.pipelines import zoo
    from collabopt.pipelines.demo.model import train_digits_cnn

    arrays = zoo.digits_images()
    (x, y), (xe, ye) = arrays
    model = train_digits_cnn(dataset_from_arrays(x, y, shuffle=True), epochs=15)
    return model, arrays, keras_accuracy(model, dataset_from_arrays(xe, ye, 256))


def run(workload: str, sparsity: float, clusters: int, settings) -> list[dict]:
    from collabopt.components.core import clustering, data, pruning, qat, training
    from collabopt.components.core.keras_compat import keras
    from collabopt.pipelines import zoo

    if workload == "digits_cnn":
        base, arrays, base_accuracy = _digits_cnn()
    else:
        trained = zoo.train(workload)
        base, arrays, base_accuracy = trained.model, trained.arrays, trained.accuracy
    (x, y), (xe, ye) = arrays
    eval_ds = data.dataset_from_arrays(xe, ye, 256)
    rows = []
    for label, params in settings:
        keras.utils.set_random_seed(1)
        if params.recovers:
            train, validation = data.train_and_validation_from_arrays(
                x, y, params.validation_fraction)
        else:
            train, validation = data.dataset_from_arrays(x, y, shuffle=True), None
        start = time.perf_counter()
        steps = []
        model = pruning.prune(base, train, pruning.PruningParams(target_sparsity=sparsity),
                              params, validation_ds=validation)
        steps.append(("prune", model))
        model = clustering.cluster(model, train, clustering.ClusteringParams(
            number_of_clusters=clusters, preserve_sparsity=True), params,
            validation_ds=validation)
        steps.append(("cluster", model))
        model = qat.quantize_aware_train(model, train, "pcqat", params, validation_ds=validation)
        steps.append(("pcqat", model))
        seconds = time.perf_counter() - start
        row = {"workload": workload, "setting": label, "base_accuracy": round(base_accuracy, 4),
               "seconds": round(seconds, 1)}
        for step, stepped in steps:
            record = training.fine_tuning_of(stepped)
            row[step] = {"accuracy": round(training.keras_accuracy(stepped, eval_ds), 4),
                         "epochs": record.epochs_trained, "stop": record.stop_reason.value}
        rows.append(row)
        print(f"{workload:11} {label:22} base {base_accuracy:.3f}  " + "  ".join(
            f"{s} {row[s]['accuracy']:.3f}/{row[s]['epochs']}ep/{row[s]['stop']}"
            for s, _ in steps) + f"  {seconds:.0f}s", flush=True)
    return rows


def main() -> None:
    from collabopt.components.core.training import TrainingParams

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="ds_cnn,digits_cnn")
    parser.add_argument("--sparsity", type=float, default=0.75)
    parser.add_argument("--clusters", type=int, default=16)
    parser.add_argument("--rates", default="1e-4,3e-4,1e-3")
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    settings = [("fixed 2 epochs, 1e-4", TrainingParams(epochs=2, learning_rate=1e-4))]
    settings += [(f"recover, {rate}", TrainingParams(learning_rate=float(rate)))
                 for rate in args.rates.split(",")]
    rows = []
    for workload in args.workloads.split(","):
        rows += run(workload, args.sparsity, args.clusters, settings)
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
