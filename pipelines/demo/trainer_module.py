"""TFX Trainer `run_fn` for the digits demo: trains the reference CNN, saves it with tf_keras."""
from __future__ import annotations

from collabopt.components.core.data import FeatureSpec, dataset_from_tfrecords
from collabopt.pipelines.demo.model import train_digits_cnn


def run_fn(fn_args) -> None:
    config = fn_args.custom_config or {}
    spec = FeatureSpec(config.get("feature_key", "image"), config.get("label_key", "label"),
                       tuple(config.get("feature_shape", (8, 8, 1))))
    batch_size = int(config.get("batch_size", 32))
    train_ds = dataset_from_tfrecords(fn_args.train_files, spec, batch_size, shuffle=True)
    eval_ds = dataset_from_tfrecords(fn_args.eval_files, spec, batch_size)
    model = train_digits_cnn(train_ds, eval_ds, epochs=int(config.get("epochs", 15)), verbose=2)
    model.save(fn_args.serving_model_dir)
