"""The one place Keras is imported.

tensorflow-model-optimization needs Keras 2 (tf_keras); TensorFlow 2.16 defaults to Keras 3 unless
TF_USE_LEGACY_KERAS=1 is set before TensorFlow is first imported. Every module takes `tf`, `keras`
and `tfmot` from here, and the `components` package imports this module first.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402

__all__ = ["tf", "keras", "tfmot"]
