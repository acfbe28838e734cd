"""Callbacks Lightning doesn't ship."""

from .gradient_monitor import GradientMonitor
from .prediction_writer import PredictionWriter
from .progress_bar import ProgressBar
from .training_curves import TrainingCurves

__all__ = ["GradientMonitor", "PredictionWriter", "ProgressBar", "TrainingCurves"]
