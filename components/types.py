"""Custom artifact types and the names of every artifact property: the public MLMD interface.

Numbers a user filters or sorts on are custom properties of the artifacts, so `collabopt leaves`,
`lineage` and `report` read ML Metadata alone. Keep these names stable.
"""
from tfx.types import artifact


# KubeflowV2DagRunner writes TYPE_NAME as the artifact's schema title, which must match
# `^[a-z][a-z0-9-_]{2,20}[.][A-Z][a-zA-Z0-9-_]{2,49}$` (one dot: tfx/orchestration/kubeflow/v2/
# compiler_utils.py), and the step's container imports the class back from that title
# (`import_class_by_path`). So the names are `collabopt.<Class>` and the top-level `collabopt`
# package exports both classes. These names are written into every ML Metadata store.
TYPE_NAMESPACE = "collabopt"


class TFLiteModel(artifact.Artifact):
    """A `.tflite` flatbuffer (file `model.tflite` in the artifact URI)."""

    TYPE_NAME = f"{TYPE_NAMESPACE}.TFLiteModel"


class VelaModel(artifact.Artifact):
    """A Vela-compiled `.tflite` for one Ethos-U target plus Vela's summary CSV."""

    TYPE_NAME = f"{TYPE_NAMESPACE}.VelaModel"


TFLITE_FILE_NAME = "model.tflite"
VELA_TFLITE_FILE_NAME = "model_vela.tflite"
VELA_SUMMARY_FILE_NAME = "summary.csv"

# Model (Pruner / SparseClusterer / PreservingQAT), TFLiteModel, VelaModel, ModelEvaluation.
TECHNIQUE_PATH = "technique_path"          # e.g. "prune>cluster>pcqat"; "base" for the base model
PARAMETERS = "parameters"                  # JSON of the step's parameters
SPARSITY = "sparsity"                      # zeros / weights over all kernels
MIN_KERNEL_SPARSITY = "min_kernel_sparsity"
MAX_UNIQUE_PER_KERNEL = "max_unique_per_kernel"
MAX_UNIQUE_PER_CHANNEL = "max_unique_per_channel"
KERAS_ACCURACY = "keras_accuracy"          # float model accuracy on the eval split
QAT_MODE = "qat_mode"
LEVELS = "levels"                          # JSON {"target_sparsity": .., "number_of_clusters": ..}

# Every artifact on a leaf's path: a leaf that could not be built (components/failure.py).
FAILED = "failed"                          # int 1 when the leaf failed
FAILURE = "failure"                        # JSON: step, path, error, message, hint

# Model (Pruner / SparseClusterer / PreservingQAT): how fine-tuning went (core.training.FineTuning).
EPOCHS_TRAINED = "epochs_trained"
STOP_REASON = "stop_reason"                # fixed_epochs, recovered, no_improvement, max_epochs
VALIDATION_ACCURACY = "validation_accuracy"  # on the slice of the train split held out
REFERENCE_ACCURACY = "reference_accuracy"    # what recovery aimed at: the chain base's, same slice

# TFLiteModel
QUANTIZATION = "quantization"
TFLITE_BYTES = "tflite_bytes"
GZIP_BYTES = "gzip_bytes"
# TFLiteModel, copied to the ModelEvaluation: TensorFlow Lite for Microcontrollers (core/tflm.py)
ARENA_BYTES = "arena_bytes"                # tensor arena TFLM needs; unset when it cannot run it
TFLM_UNSUPPORTED_OPS = "tflm_unsupported_ops"  # JSON list of operators TFLM has no kernel for
TFLM_ERROR = "tflm_error"                  # why TFLM cannot run the model, when it cannot

# VelaModel
TARGET = "target"                          # accelerator_config, e.g. "ethos-u55-128"
SYSTEM_CONFIG = "system_config"
MEMORY_MODE = "memory_mode"
OPTIMISE = "optimise"
CYCLES = "cycles"
INFERENCE_MS = "inference_ms"
SRAM_BYTES = "sram_bytes"
FLASH_BYTES = "flash_bytes"                # weights in flash (Shared_Sram memory modes)
DRAM_BYTES = "dram_bytes"                  # weights and arena in DRAM (Dedicated_Sram modes)
ORIGINAL_WEIGHT_BYTES = "original_weight_bytes"
ENCODED_WEIGHT_BYTES = "encoded_weight_bytes"
NPU_OPS = "npu_ops"
CPU_OPS = "cpu_ops"

# ModelEvaluation / ModelBlessing
INT8_ACCURACY = "int8_accuracy"
BASELINE_ACCURACY = "baseline_accuracy"
ACCURACY_DROP = "accuracy_drop"
NUM_EXAMPLES = "num_examples"
BLESSED = "blessed"                        # int 1/0, as TFX's Evaluator writes it
REASONS = "reasons"                        # JSON list of why a blessing was refused
SELECTED = "selected"                      # int 1 on the leaf the selector picked

# ModelEvaluation: the evaluator copies the leaf's figures here so the selector reads one artifact.
TFLITE_URI = "tflite_uri"
VELA_URI = "vela_uri"
# ModelEvaluation: every target's Vela figures and verdict, primary target first. JSON list of
# {"target": name, "accelerator_config", "inference_ms", "sram_bytes", "flash_bytes",
#  "dram_bytes", "npu_ops", "cpu_ops", "vela_uri", "blessed": 0/1, "reasons": [...]}.
PER_TARGET = "per_target"

# Selector outputs (Model and ModelBlessing)
SELECTED_PATH = "selected_path"            # technique path of the leaf chosen, "" if none
OBJECTIVE = "objective"
RANKING = "ranking"                        # JSON list of passing leaves, best first
EXPLANATION = "explanation"                # why this leaf, or which came closest and by how much
CLOSEST_PATH = "closest_path"              # when none was selected: the nearest miss
TIED = "tied"                              # JSON list: leaves within objective_tolerance of the best
FAILED_LEAVES = "failed_leaves"            # JSON list of the leaves that could not be built
SEARCH_TRACE = "search_trace"              # JSON: the levels `mode: search` tried and why it stopped
# Selector ModelBlessings: one per target. `target` (above) names the target the blessing is for;
# `primary` is 1 on the one a Pusher consumes (the first target's).
PRIMARY = "primary"
