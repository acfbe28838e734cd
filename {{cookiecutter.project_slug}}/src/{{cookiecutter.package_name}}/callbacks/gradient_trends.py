"""Exploding and vanishing gradients, judged against the run's own early behaviour.

A fixed threshold on a gradient norm means nothing across models and data: a normal digits
run's norms fall ~100x as it converges. ``GradientTrends`` instead compares each layer with
its own norm in the first step and with the largest layer at the same step, and alerts once
per layer only when a condition holds on several checks in a row (single steps are noisy:
a bias's gradient can be near zero by chance).

Measured on the shipped default runs checked at every step (digits/SmallCNN and
breast-cancer/MLP): a layer's norm over its first-step norm stayed between 2e-3 and 7.1, the
smallest layer over the largest above 8e-4.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence


class GradientTrends:
    """Keeps the first step's norms and reports layers whose gradients left their range."""

    def __init__(
        self,
        explode_factor: float = 100.0,
        vanish_factor: float = 1e-4,
        depth_ratio: float = 1e-5,
        patience: int = 3,
    ) -> None:
        """
        Args:
            explode_factor: A layer explodes when its norm exceeds its first-step norm this
                many times over.
            vanish_factor: A layer vanishes when its norm falls below this share of its
                first-step norm ...
            depth_ratio: ... or below this share of the largest layer's norm at that step
                (a layer far down a deep stack that never learned).
            patience: Consecutive checks a condition must hold before it is reported.
        """
        self.explode_factor, self.vanish_factor = explode_factor, vanish_factor
        self.depth_ratio, self.patience = depth_ratio, patience
        self.baseline: dict[str, float] = {}
        self.baseline_step: int | None = None
        self.streaks: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.reported: set[tuple[str, str]] = set()

    def update(self, step: int, names: Sequence[str], norms: Sequence[float]) -> list[str]:
        """Alerts raised by the norms of ``step`` (each layer and kind once per run)."""
        if self.baseline_step is None:
            self.baseline = dict(zip(names, norms, strict=True))
            self.baseline_step = step
            return []
        finite = {n: v for n, v in zip(names, norms, strict=True) if v == v and v != float("inf")}
        if not finite:
            return []
        largest_name = max(finite, key=finite.__getitem__)
        largest = finite[largest_name]
        alerts = []
        for name, norm in finite.items():
            first = self.baseline.get(name, 0.0)
            found = {}
            if first > 0 and norm > self.explode_factor * first:
                found["exploding"] = f"{norm / first:.3g}x its norm at step {self.baseline_step}"
            elif first > 0 and norm < self.vanish_factor * first:
                found["vanishing"] = f"{norm / first:.2g} of its norm at step {self.baseline_step}"
            elif largest > 0 and norm < self.depth_ratio * largest:
                found["vanishing"] = f"{norm / largest:.2g} of the largest, '{largest_name}'"
            for kind in ("exploding", "vanishing"):
                key = (name, kind)
                self.streaks[key] = self.streaks[key] + 1 if kind in found else 0
                if self.streaks[key] >= self.patience and key not in self.reported:
                    self.reported.add(key)
                    alerts.append(
                        f"GradientMonitor: {kind} gradient in '{name}' at step {step}: norm "
                        f"{norm:.3g} is {found[kind]} ({self.patience} checks in a row)."
                    )
        return alerts
