"""Channel and parameter keys of the components: module constants, as in TFX's standard specs."""

# Inputs / outputs
EXAMPLES_KEY = "examples"
MODEL_KEY = "model"
TFLITE_MODEL_KEY = "tflite_model"
VELA_MODEL_KEY = "vela_model"
BASELINE_EVALUATION_KEY = "baseline_evaluation"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"
