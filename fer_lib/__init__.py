"""Facial expression recognition with a frozen RGB network and a
weighted landmark-heatmap branch."""

__version__ = "0.1.0"
