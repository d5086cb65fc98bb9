"""Pruner: TFMOT magnitude pruning as a TFX component (component.py + thin executor.py)."""
