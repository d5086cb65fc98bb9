"""Every failure a user can meet has a type; messages name the input and the way out."""


class CollaboptError(Exception):
    """Base class of every error collabopt raises on purpose."""


class ConfigError(CollaboptError, ValueError):
    """A parameter, threshold or config value is invalid."""


class ModelLoadError(CollaboptError):
    """A model file is missing, corrupt or not a Keras model."""


class UnsupportedModelError(CollaboptError):
    """The model as a whole cannot be optimized (e.g. a subclassed model)."""


class UnsupportedLayerError(UnsupportedModelError):
    """A layer cannot be pruned, clustered or quantized by TFMOT."""

    def __init__(self, message: str, layers: list[str] | None = None):
        super().__init__(message)
        self.layers = list(layers or [])


class DatasetError(CollaboptError):
    """Input data is missing, empty or does not match the feature spec."""


class TrainingDivergedError(CollaboptError):
    """Fine-tuning diverged (the loss or the weights became NaN or infinite)."""


class ModelDataMismatchError(ConfigError):
    """The model and the data cannot work together: the input layout or the output size does not
    fit the features or the labels."""


class StructureLostError(CollaboptError):
    """A step destroyed what a previous step achieved (sparsity, clusters)."""


class ConversionError(CollaboptError):
    """TFLite conversion failed."""


class VelaCompileError(CollaboptError):
    """Vela could not compile a model for the Ethos-U target."""


class TFLMError(CollaboptError):
    """TensorFlow Lite for Microcontrollers cannot load or run a model."""
