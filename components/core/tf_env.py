"""TensorFlow's environment, set before TensorFlow is first imported (without importing it).

tensorflow-model-optimization needs Keras 2 (tf_keras): TensorFlow 2.16 picks it only when
TF_USE_LEGACY_KERAS=1 is set before its first import. The packages import this module first, so
the variable is set whoever imports TensorFlow next; `keras_compat` (the one place Keras is
imported) imports it too. Importing the package no longer imports TensorFlow itself, so commands
that never need it (a config error, `--help`) stay fast and quiet.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
