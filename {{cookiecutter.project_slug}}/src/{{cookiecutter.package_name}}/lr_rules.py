"""Rules that read a learning rate off the LR finder's curve (rates rising geometrically, one
batch each, the loss smoothed).

Lightning's own ``suggestion()`` takes the steepest fall of the loss per unit of *linear*
rate; on a geometric sweep that favours the small rates, where the points lie closest. On
the default digits it suggested 5.0e-4 and 1.7e-4 (seeds 42 and 1) where the shipped 3e-3
reaches 99 %: the README's "The learning rate" compares the rules on both default datasets
and on copies with a quarter of the labels flipped. These rules work in log rate, where the
sweep is even.
Written here because Lightning has only its own and torch-lr-finder is a second finder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Rule = Literal["valley", "steepest", "minimum_over_10"]
# Lightning's own margins: the first smoothed losses are unreliable, the last have diverged.
SKIP_BEGIN, SKIP_END = 10, 1


def suggestions(lrs: Sequence[float], losses: Sequence[float]) -> dict[str, float | None]:
    """Each rule's learning rate for one finder curve; None where too few points are finite.

    - ``valley``: the middle of the longest stretch over which the loss keeps falling;
    - ``steepest``: where the loss falls fastest per decade of rate;
    - ``minimum_over_10``: a tenth of the rate at the lowest loss (the rule of the paper that
      introduced the range test).
    """
    lr = np.asarray(lrs, dtype=float)[SKIP_BEGIN:-SKIP_END]
    loss = np.asarray(losses, dtype=float)[SKIP_BEGIN:-SKIP_END]
    finite = np.isfinite(loss)
    lr, loss = lr[finite], loss[finite]
    if len(loss) < 3:
        return {"valley": None, "steepest": None, "minimum_over_10": None}
    return {
        "valley": float(lr[valley_middle(loss)]),
        "steepest": float(lr[np.argmin(np.gradient(loss, np.log(lr)))]),
        "minimum_over_10": float(lr[np.argmin(loss)] / 10),
    }


def valley_middle(loss: np.ndarray) -> int:
    """The index halfway along the longest run of consecutive falls (the first if tied)."""
    best_start, best_end, start = 0, 0, 0
    for i in range(1, len(loss)):
        if loss[i] >= loss[i - 1]:
            start = i
        elif i - start > best_end - best_start:
            best_start, best_end = start, i
    return (best_start + best_end) // 2
