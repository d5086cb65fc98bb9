"""SparseClusterer: TFMOT weight clustering as a TFX component (component.py + executor.py)."""
