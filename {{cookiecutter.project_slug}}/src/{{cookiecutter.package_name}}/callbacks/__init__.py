"""Callbacks Lightning doesn't ship."""

from .gradient_monitor import GradientMonitor

__all__ = ["GradientMonitor"]
