"""Pure optimization logic: Keras models, TFLite bytes and metrics in and out. Never imports TFX."""
