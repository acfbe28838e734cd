"""Callbacks Lightning doesn't ship."""

from .gradient_monitor import GradientMonitor
from .prediction_writer import PredictionWriter
from .progress_bar import ProgressBar

__all__ = ["GradientMonitor", "PredictionWriter", "ProgressBar"]
