"""The one place Keras is imported.

tensorflow-model-optimization needs Keras 2 (tf_keras); TensorFlow 2.16 defaults to Keras 3 unless
TF_USE_LEGACY_KERAS=1 is set before TensorFlow is first imported (`tf_env` sets it; the packages
import it first). Every module takes `tf`, `keras` and `tfmot` from here.
"""
from collabopt.components.core import tf_env  # noqa: F401  (TF_USE_LEGACY_KERAS first)

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402

__all__ = ["tf", "keras", "tfmot"]
