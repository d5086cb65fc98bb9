"""VelaCompiler: Arm Vela for Ethos-U as a TFX component (component.py + executor.py)."""
