"""Learning-rate schedules built from ``(optimizer, total_steps)``.

``Classifier.configure_optimizers`` calls a schedule with the trainer's
``estimated_stepping_batches``, which no config file can know in advance (it depends on the
data size, ``max_epochs``, gradient accumulation and the number of devices). Each schedule
here is a subclass of the torch scheduler it wraps; add a new one the same way: a class whose
first two parameters are ``optimizer`` and ``total_steps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau

# total_steps is None for a run without end (max_epochs -1 and no max_steps).
ScheduleFactory = Callable[[Optimizer, int | None], LRScheduler]


def run_length(schedule: type, total_steps: int | None) -> int:
    """``total_steps``, or the refusal of a schedule that must know where the run ends."""
    if total_steps is None:
        raise ValueError(
            f"{schedule.__name__} needs the run's length, and this run has none "
            "(trainer.max_epochs -1 without max_steps): set max_epochs or max_steps, or use "
            "schedulers.Plateau or --model.lr_scheduler null."
        )
    return total_steps


class OneCycle(OneCycleLR):
    """Warm up to the optimizer's learning rate, then anneal; stepped every batch."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None,
        pct_start: float = 0.3,  # share of the run spent warming up
        div_factor: float = 25.0,  # start at lr / div_factor
        final_div_factor: float = 1e4,  # end at lr / (div_factor * final_div_factor)
    ) -> None:
        super().__init__(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=run_length(OneCycle, total_steps),
            pct_start=pct_start,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
        )


class WarmupCosine(LambdaLR):
    """Linear warm-up, then cosine decay to ``min_factor * lr``; stepped every batch."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None,
        warmup_fraction: float = 0.05,
        min_factor: float = 0.0,
    ) -> None:
        total_steps = run_length(WarmupCosine, total_steps)
        self.warmup_steps = max(1, int(warmup_fraction * total_steps))
        self.total_steps, self.min_factor = max(total_steps, self.warmup_steps + 1), min_factor
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


class Plateau(ReduceLROnPlateau):
    """Cut the learning rate when ``val/loss`` stops improving; stepped every epoch.

    ``total_steps`` is accepted for a uniform interface and ignored: this schedule follows
    the metric, not the clock.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None,
        factor: float = 0.5,
        patience: int = 3,
    ) -> None:
        super().__init__(optimizer, mode="min", factor=factor, patience=patience)
