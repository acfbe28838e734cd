"""Judging a model beyond accuracy: per-class precision and recall, calibration, groups.

The functions here are pure (tensors in, rows or numbers out); ``Classifier`` accumulates what
they need during ``test``, ``ProjectCLI.after_test`` writes the results and
``reports.reliability_figure`` draws them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassF1Score

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


class ReliabilityBins(NamedTuple):
    """Per-bin sample counts, summed top-1 confidences and correct predictions.

    ``n_bins`` equal bins over [0, 1) and one more slot for confidence exactly 1, which
    torchmetrics' ``MulticlassCalibrationError`` also keeps apart: the ECE from these bins
    equals its value.
    """

    count: Tensor
    confidence: Tensor
    correct: Tensor


class Top1Accuracy(Metric):
    """Micro-averaged accuracy as two counters on the device, for training steps.

    ``MulticlassAccuracy`` derives the same number from stat scores: 18 tensor operations
    per update against 5 here. A small network on a fast GPU trains as fast as Python
    launches kernels, so each one counts (see benchmarks/README.md in the template).
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        self.correct += (logits.argmax(dim=1) == target).sum()
        self.total += target.numel()

    def compute(self) -> Tensor:
        return self.correct / self.total


class MacroF1(MulticlassF1Score):
    """torchmetrics' macro F1, at most 1: it sums each class's share of the mean in float32,
    so ten perfect classes give 1.0000001, which reads as a bug in every report."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes, average="macro", validate_args=False)

    def compute(self) -> Tensor:
        return super().compute().clamp(max=1.0)


class WeightedMean(Metric):
    """The mean of batch values weighted by their batch's weight, synced as two sums.

    torchmetrics' ``MeanMetric`` either checks every update for NaN, reading a flag back
    from the GPU, or (``nan_strategy="disable"``, torchmetrics 1.9) drops the weights.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: Tensor, weight: Tensor) -> None:
        self.total += value.detach().double() * weight
        self.weight += weight

    def compute(self) -> Tensor:
        return (self.total / self.weight).float()


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


class GroupConfusion(Metric):
    """A confusion matrix per group, shaped (groups, true, predicted): every per-group metric
    follows from these counts, which DDP syncs by adding them."""

    full_state_update = False

    def __init__(self, num_groups: int, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shape = (num_groups, num_classes, num_classes)
        self.add_state("counts", torch.zeros(math.prod(self.shape)), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor, group: Tensor) -> None:
        classes = self.shape[1]
        cell = (group * classes + target) * classes + logits.argmax(dim=1)
        self.counts.scatter_add_(0, cell, torch.ones_like(cell, dtype=self.counts.dtype))

    def compute(self) -> Tensor:
        return self.counts.view(self.shape)


GROUP_METRICS = ("acc", "f1_macro")


def per_group_table(
    counts: Tensor, group_names: Sequence[str], class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """Support, accuracy and macro F1 of each group that has test samples.

    Macro F1 as torchmetrics computes the overall one: over every class the group holds or
    the model predicted for it, so false positives into a class the group lacks count.
    """
    rows = []
    for name, matrix in zip(group_names, counts, strict=True):
        support = int(matrix.sum())
        if support == 0:
            continue
        seen = (matrix.sum(dim=0) + matrix.sum(dim=1)) > 0
        table = per_class_table(matrix, class_names)
        present = [row["f1"] for row, used in zip(table, seen.tolist(), strict=True) if used]
        accuracy = float(matrix.diagonal().sum()) / support
        f1_macro = sum(present) / len(present)
        rows.append({"group": name, "support": support, "acc": accuracy, "f1_macro": f1_macro})
    return rows


def largest_gaps(
    rows: Sequence[dict[str, Any]], threshold: float, min_size: int
) -> dict[str, dict[str, Any]]:
    """Per metric: the best and the worst group of at least ``min_size`` test samples, their
    difference and whether it is above ``threshold``.

    Smaller groups are listed as ``too_small`` but decide nothing: a gap measured on a few
    samples is mostly chance (an accuracy of 0.9 on 30 samples has a standard error of 0.055).
    """
    judged = [row for row in rows if row["support"] >= min_size]
    too_small = [row["group"] for row in rows if row["support"] < min_size]
    gaps = {}
    for metric in GROUP_METRICS:
        if len(judged) < 2:
            gaps[metric] = {"gap": None, "best": None, "worst": None, "flagged": False}
        else:
            best = max(judged, key=lambda row: row[metric])
            worst = min(judged, key=lambda row: row[metric])
            gap = best[metric] - worst[metric]
            flagged = gap > threshold
            gaps[metric] = {
                "gap": gap,
                "best": best["group"],
                "worst": worst["group"],
                "flagged": flagged,
            }
        gaps[metric]["too_small"] = too_small
    return gaps


def format_gaps(gaps: dict[str, dict[str, Any]]) -> str:
    """One line per metric: the largest gap between groups and whether it is above the limit."""
    lines = []
    for metric, gap in gaps.items():
        if gap["gap"] is None:
            lines.append(f"No {metric} gap: fewer than two groups are large enough to compare")
            continue
        mark = "ABOVE THE LIMIT" if gap["flagged"] else "within the limit"
        lines.append(
            f"Largest {metric} gap: {gap['gap']:.4f} ({gap['best']} best, {gap['worst']} "
            f"worst), {mark}"
        )
    too_small = next(iter(gaps.values()), {}).get("too_small")
    if too_small:
        lines.append(f"Too few test samples to judge a gap: {', '.join(too_small)}")
    return "\n".join(lines)
