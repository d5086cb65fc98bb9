"""Evaluator: int8 accuracy of a `.tflite`, thresholds, and a blessing a standard Pusher accepts."""
