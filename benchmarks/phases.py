"""Host time per phase of a training step, for ``throughput.py``'s ``A_phases`` and
``B_phases`` runs: where A's time beyond B's goes when both are bound by the host.

Nothing here waits for the GPU, so each figure is the time Python spent launching that part
of the step (or blocked launching it, once the GPU's queue is full).
"""

from __future__ import annotations

import statistics
import time

import lightning as L

# The hooks Lightning calls in each step, in order, and what runs between one and the next.
A_PHASES = {
    "on_train_batch_start": "between steps: loop, fetch, transfer, gather, augment",
    "on_before_zero_grad": "training_step: forward, loss, metrics",
    "on_before_backward": "zero_grad, closure",
    "on_after_backward": "backward",
    "on_before_optimizer_step": "callbacks before the optimizer step",
    "on_train_batch_end": "clipping, optimizer step, LR schedule",
}
B_PHASES = {
    "fetch": "gather, augment, standardise",
    "forward": "forward, loss",
    "backward": "backward",
    "step": "clipping, optimizer step, zero_grad, LR schedule",
}


class Phases:
    """Median milliseconds per named phase, from ``mark(name)`` at the end of each phase."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.last: float | None = None

    def start(self) -> None:
        self.last = time.perf_counter()

    def mark(self, name: str, timed: bool = True) -> None:
        now = time.perf_counter()
        if timed and self.last is not None:
            self.times.setdefault(name, []).append((now - self.last) * 1e3)
        self.last = now

    def medians(self) -> dict[str, float]:
        return {name: statistics.median(times) for name, times in self.times.items()}


def _marking(hook: str):
    """A ``PhaseTimer`` hook that marks the end of the phase ``hook`` ends."""

    def method(self: PhaseTimer, trainer: L.Trainer, *args) -> None:
        self.mark(trainer, hook)

    return method


class PhaseTimer(L.Callback):
    """Marks the end of each phase of ``A_PHASES`` in the timed steps (epochs after the
    first, ``skip`` steps into each). Added after the config's callbacks, so their work in a
    hook counts towards the phase that hook ends (Lightning runs ModelCheckpoint last)."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.phases = Phases()

    def mark(self, trainer: L.Trainer, hook: str) -> None:
        epoch, step = trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_idx
        timed = epoch >= 1 and step >= self.skip
        self.phases.mark(hook, timed)

    on_train_batch_start = _marking("on_train_batch_start")
    on_before_zero_grad = _marking("on_before_zero_grad")
    on_before_backward = _marking("on_before_backward")
    on_after_backward = _marking("on_after_backward")
    on_before_optimizer_step = _marking("on_before_optimizer_step")
    on_train_batch_end = _marking("on_train_batch_end")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.phases.start()


def table(a: dict[str, float], b: dict[str, float], labels: tuple[str, str] = ("A", "B")) -> str:
    """Two runs' phases one under the other, with each one's total."""
    lines = []
    for run, medians in zip(labels, (a, b), strict=True):
        names = A_PHASES if set(medians) <= set(A_PHASES) else B_PHASES
        for key, what in names.items():
            if key in medians:
                lines.append(f"{run}  {what:<58}{medians[key]:>7.2f} ms")
        lines.append(f"{run}  {'total':<58}{sum(medians.values()):>7.2f} ms")
    return "\n".join(lines)
