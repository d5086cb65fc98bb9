"""PreservingQAT: QAT / PQAT / CQAT / PCQAT as a TFX component (component.py + executor.py)."""
