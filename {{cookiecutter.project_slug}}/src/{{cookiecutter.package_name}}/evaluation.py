"""Judging a model beyond accuracy: per-class precision and recall, and calibration.

The functions here are pure (tensors in, rows or numbers out); ``Classifier`` accumulates what
they need during ``test``, ``ProjectCLI.after_test`` writes the results and
``reports.reliability_figure`` draws them.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric

PER_CLASS_COLUMNS = ("class", "precision", "recall", "f1", "support")


def per_class_table(matrix: Tensor, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support per class from a (true, predicted) confusion matrix.

    The test's confusion matrix already holds every count these need, so no further metric
    state is kept. A class never predicted (or never present) scores 0, as torchmetrics does.
    """
    counts = matrix.detach().double().cpu()
    hits = counts.diagonal()
    support = counts.sum(dim=1)
    predicted = counts.sum(dim=0)
    precision = torch.where(predicted > 0, hits / predicted.clamp(min=1), 0.0)
    recall = torch.where(support > 0, hits / support.clamp(min=1), 0.0)
    both = precision + recall
    f1 = torch.where(both > 0, 2 * precision * recall / both.clamp(min=1e-12), 0.0)
    return [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    ]


def save_per_class(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=PER_CLASS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def format_per_class(rows: Sequence[dict[str, Any]]) -> str:
    """The table as a person reads it at the end of a run: one line per class."""
    width = max([5, *(len(str(row["class"])) for row in rows)])
    lines = [f"{'class':<{width}}  precision  recall      f1  support"]
    for row in rows:
        lines.append(
            f"{row['class']!s:<{width}}  {row['precision']:>9.4f}  {row['recall']:>6.4f}"
            f"  {row['f1']:>6.4f}  {row['support']:>7d}"
        )
    return "\n".join(lines)


class ReliabilityBins(NamedTuple):
    """Per-bin sample counts, summed top-1 confidences and correct predictions.

    ``n_bins`` equal bins over [0, 1) and one more slot for confidence exactly 1, which
    torchmetrics' ``MulticlassCalibrationError`` also keeps apart: the ECE from these bins
    equals its value.
    """

    count: Tensor
    confidence: Tensor
    correct: Tensor


class CalibrationBins(Metric):
    """Accumulates ``ReliabilityBins`` on the device: a few numbers of state per bin.

    ``MulticlassCalibrationError`` keeps every prediction's confidence until ``compute``; the
    reliability diagram needs only per-bin sums, which DDP syncs by adding them.
    """

    full_state_update = False

    def __init__(self, n_bins: int = 15, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_bins = n_bins
        for name in ReliabilityBins._fields:
            self.add_state(name, torch.zeros(n_bins + 1), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        confidence, predicted = logits.float().softmax(dim=1).max(dim=1)
        edges = torch.linspace(0, 1, self.n_bins + 1, device=confidence.device)
        slot = torch.bucketize(confidence, edges, right=True) - 1
        self.count.scatter_add_(0, slot, torch.ones_like(confidence))
        self.confidence.scatter_add_(0, slot, confidence)
        self.correct.scatter_add_(0, slot, predicted.eq(target).float())

    def compute(self) -> ReliabilityBins:
        return ReliabilityBins(self.count, self.confidence, self.correct)


def bin_means(bins: ReliabilityBins) -> tuple[Tensor, Tensor]:
    """Mean accuracy and mean confidence per bin; 0 where a bin is empty."""
    count = bins.count.clamp(min=1)
    return bins.correct / count, bins.confidence / count


def expected_calibration_error(bins: ReliabilityBins) -> Tensor:
    """L1 ECE: the gap between accuracy and confidence per bin, weighted by the bin's share."""
    accuracy, confidence = bin_means(bins)
    share = bins.count / bins.count.sum().clamp(min=1)
    return ((accuracy - confidence).abs() * share).sum()
