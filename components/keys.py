"""Channel and parameter keys of the components: module constants, as in TFX's standard specs."""

# Inputs / outputs
EXAMPLES_KEY = "examples"
MODEL_KEY = "model"
TFLITE_MODEL_KEY = "tflite_model"
VELA_MODEL_KEY = "vela_model"
BASELINE_EVALUATION_KEY = "baseline_evaluation"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"
# Output of Pruner / SparseClusterer / PreservingQAT (their input is MODEL_KEY; TFX wants distinct
# names for inputs and outputs of one component).
OPTIMIZED_MODEL_KEY = "optimized_model"

# Parameters: data (every component that reads Examples)
FEATURE_KEY_KEY = "feature_key"
LABEL_KEY_KEY = "label_key"
FEATURE_SHAPE_KEY = "feature_shape"
FEATURE_DTYPE_KEY = "feature_dtype"
FEATURE_SCALE_KEY = "feature_scale"
BATCH_SIZE_KEY = "batch_size"

# Parameters: fine-tuning (Pruner / SparseClusterer / PreservingQAT)
EPOCHS_KEY = "epochs"                            # None: until recovered; N: exactly N epochs
MAX_EPOCHS_KEY = "max_epochs"
PATIENCE_KEY = "patience"
RECOVERY_TOLERANCE_KEY = "recovery_tolerance"
VALIDATION_FRACTION_KEY = "validation_fraction"
SEED_KEY = "seed"
LEARNING_RATE_KEY = "learning_rate"

# Parameters: layer selection (Pruner / SparseClusterer)
LAYERS_KEY = "layers"

# Parameters: Pruner (TFMOT's words)
TARGET_SPARSITY_KEY = "target_sparsity"
PRUNING_SCHEDULE_KEY = "pruning_schedule"
INITIAL_SPARSITY_KEY = "initial_sparsity"
BEGIN_STEP_KEY = "begin_step"
END_STEP_KEY = "end_step"
FREQUENCY_KEY = "frequency"
SPARSITY_M_BY_N_KEY = "sparsity_m_by_n"
PRUNING_POLICY_KEY = "pruning_policy"

# Parameters: SparseClusterer (TFMOT's words)
NUMBER_OF_CLUSTERS_KEY = "number_of_clusters"
CLUSTER_CENTROIDS_INIT_KEY = "cluster_centroids_init"
PRESERVE_SPARSITY_KEY = "preserve_sparsity"
CLUSTER_PER_CHANNEL_KEY = "cluster_per_channel"

# Parameters: PreservingQAT
MODE_KEY = "mode"

# Parameters: TFLiteConverter
QUANTIZATION_KEY = "quantization"
INT8_IO_KEY = "int8_io"
NUM_CALIBRATION_SAMPLES_KEY = "num_calibration_samples"

# Parameters: VelaCompiler (Vela's words)
ACCELERATOR_CONFIG_KEY = "accelerator_config"
SYSTEM_CONFIG_KEY = "system_config"
MEMORY_MODE_KEY = "memory_mode"
OPTIMISE_KEY = "optimise"
CONFIG_FILES_KEY = "config_files"

# Parameters: Evaluator thresholds (each optional)
MIN_ACCURACY_KEY = "min_accuracy"
MAX_ACCURACY_DROP_KEY = "max_accuracy_drop"
MAX_TFLITE_BYTES_KEY = "max_tflite_bytes"
MAX_INFERENCE_MS_KEY = "max_inference_ms"
MAX_SRAM_BYTES_KEY = "max_sram_bytes"
MAX_ARENA_BYTES_KEY = "max_arena_bytes"

# Evaluator / Selector: the names of the Ethos-U targets, primary first (JSON list). The
# Evaluator's Vela inputs are VELA_MODEL_KEY (primary) and `vela_model_<i>` for the others; the
# Selector's blessings are BLESSING_KEY (primary) and `blessing_<i>` for the others.
TARGETS_KEY = "targets"

# Selector parameters
THRESHOLDS_KEY = "thresholds"
OBJECTIVE_KEY = "objective"
OBJECTIVE_TOLERANCE_KEY = "objective_tolerance"
SEARCH_TRACE_KEY = "search_trace"


def extra_vela_model_key(index: int) -> str:
    """The Evaluator's input key of the Vela model for target `index` (>= 1)."""
    return f"{VELA_MODEL_KEY}_{index}"


def extra_blessing_key(index: int) -> str:
    """The Selector's output key of the blessing for target `index` (>= 1)."""
    return f"{BLESSING_KEY}_{index}"
