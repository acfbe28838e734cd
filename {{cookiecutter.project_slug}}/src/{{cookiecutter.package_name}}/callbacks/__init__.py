"""Callbacks Lightning doesn't ship."""

from .energy import EnergyMeter
from .gradient_monitor import GradientMonitor
from .prediction_writer import PredictionWriter
from .progress_bar import ProgressBar
from .resumable import Resumable
from .test_reports import TestReports
from .training_curves import TrainingCurves
from .trial_pruning import TrialPruning
from .validation_plots import ValidationPlots
from .validation_reports import ValidationReports

__all__ = [
    "EnergyMeter",
    "GradientMonitor",
    "PredictionWriter",
    "ProgressBar",
    "Resumable",
    "TestReports",
    "TrainingCurves",
    "TrialPruning",
    "ValidationPlots",
    "ValidationReports",
]
