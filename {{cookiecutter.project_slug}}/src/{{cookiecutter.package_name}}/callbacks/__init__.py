"""Callbacks Lightning doesn't ship."""

from .gradient_monitor import GradientMonitor
from .prediction_writer import PredictionWriter

__all__ = ["GradientMonitor", "PredictionWriter"]
