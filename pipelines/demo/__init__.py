"""The digits demo: data shipped inside scikit-learn, a small CNN trained on it."""
