"""TFLiteConverter: Keras model -> .tflite as a TFX component (component.py + executor.py)."""
