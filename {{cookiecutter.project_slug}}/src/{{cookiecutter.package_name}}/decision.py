"""The decision: which class to name for a sample's probabilities.

By default the most probable one. Where a rare class matters (macro-F1), that argmax can
miss it almost always (a real table with 6 % buyers: macro-F1 0.48, no buyer named), while
a loss weighted by class takes the probabilities apart (its accuracy fell to 0.54). Offsets
added to the log-probabilities, fitted on the validation split to maximise macro-F1, move
only the decision: the probabilities stay calibrated. Hand-written: torchmetrics computes
F1 at a given decision but fits no per-class offsets, and a single threshold covers only
two classes.
"""

from __future__ import annotations

import torch
from torch import Tensor

GRID = torch.linspace(-4.0, 4.0, 81)  # candidate offsets, in log-probability
ROUNDS = 2  # passes of coordinate ascent over the classes


def macro_f1(predicted: Tensor, target: Tensor, num_classes: int) -> float:
    """Mean F1 over the classes that occur in ``target`` or ``predicted``."""
    hits = torch.bincount(target[predicted == target], minlength=num_classes).double()
    named = torch.bincount(predicted, minlength=num_classes).double()
    actual = torch.bincount(target, minlength=num_classes).double()
    present = (named + actual) > 0
    return float((2 * hits / (named + actual).clamp_min(1))[present].mean())


def fit_offsets(logits: Tensor, target: Tensor) -> Tensor:
    """Per-class offsets (the first class's fixed at 0) that maximise macro-F1 of
    ``argmax(log_softmax(logits) + offsets)``, by coordinate ascent over ``GRID``; smaller
    offsets win ties, so a decision the argmax already gets right stays the argmax."""
    scores = torch.log_softmax(logits.double().cpu(), dim=1)
    target = target.cpu()
    num_classes = scores.shape[1]
    offsets = torch.zeros(num_classes, dtype=torch.float64)
    best = macro_f1(scores.argmax(dim=1), target, num_classes)
    candidates = GRID.double()[GRID.abs().argsort(stable=True)]
    for _ in range(ROUNDS):
        for c in range(1, num_classes):
            for value in candidates:
                trial = offsets.clone()
                trial[c] = value
                score = macro_f1((scores + trial).argmax(dim=1), target, num_classes)
                if score > best + 1e-12:
                    best, offsets = score, trial
    return offsets.float()


def decide(probabilities: Tensor, offsets: Tensor) -> Tensor:
    """The class named for each row of ``probabilities``: argmax of log p + ``offsets``."""
    scores = probabilities.float().clamp_min(1e-30).log() + offsets.to(probabilities.device)
    return scores.argmax(dim=1)
