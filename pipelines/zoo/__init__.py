"""A small model zoo with data the project generates (no downloads), for tests and benchmarks.

Workloads (`ZOO`): `ds_cnn` (DS-CNN on synthetic keyword-spotting features), `mobilenet_v1`
(alpha 0.25 on digits at 32x32x3), `cnn_1d` (Conv1D on synthetic 1-D signals), `resnet` (a
residual network with Add on 8x8 digits) and `mlp` (on flat digits). `train(name)` trains one,
`write_workload(name, dir)` writes its data as tf.Example TFRecords and the model as a tf_keras
SavedModel, ready for a pipeline config.
"""
from collabopt.pipelines.zoo.data import digits_images, kws_features, signals_1d, write_splits
from collabopt.pipelines.zoo.models import cnn_1d, ds_cnn, mlp, mobilenet_v1, resnet
from collabopt.pipelines.zoo.workloads import (ZOO, TrainedModel, Workload, WrittenWorkload,
                                               parameter_count, train, workload, write_workload)

__all__ = ["ZOO", "Workload", "workload", "train", "TrainedModel", "write_workload",
           "WrittenWorkload", "parameter_count", "ds_cnn", "mobilenet_v1", "cnn_1d", "resnet",
           "mlp", "digits_images", "signals_1d", "kws_features", "write_splits"]
