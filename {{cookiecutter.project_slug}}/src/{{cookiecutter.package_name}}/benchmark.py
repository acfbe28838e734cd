"""Is training bound by the data, the model or the loop around them? Three throughputs, side by
side in one process, and what to change.

1. the loader alone (samples/s delivered to the device, gathered and augmented there when
   the data module does that);
2. the model stepping on one batch already on the device (forward, backward, optimizer);
3. the full training step through ``Trainer.fit`` with the run's callbacks and logger.

The slowest of the first two bounds the third; a third well below both means the loop itself
(host syncs, logging, per-step Python) is the cost.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import lightning as L
from torch import Tensor

from .system import Classifier

INPUT_MARGIN = 1.2  # the loader should outrun the model by this much, or the device waits
OVERHEAD_LIMIT = 0.85  # a full step slower than this share of its bound: the loop is the cost


@dataclass
class Figures:
    """Throughputs in samples per second, and the settings they were measured with."""

    device: str
    precision: str
    batch_size: int
    num_workers: int
    loader: float
    model_step: float
    train_step: float
    peak_memory_mb: float | None = None
    bound: str = ""
    advice: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("loader, to the device", self.loader),
            ("model step, batch on the device", self.model_step),
            ("full training step (Trainer.fit)", self.train_step),
        ]
        lines = [f"Benchmark on {self.device}, {self.precision}, batch {self.batch_size}:"]
        lines += [f"  {name:<34} {value:>12,.0f} samples/s" for name, value in rows]
        lines.append(f"  full step / model step: {self.train_step / self.model_step:.2f}")
        if self.peak_memory_mb is not None:
            lines.append(f"  peak device memory: {self.peak_memory_mb:,.0f} MB")
        lines.append(f"Bound by {self.bound}.")
        lines += [f"  - {tip}" for tip in self.advice]
        return "\n".join(lines)


def timed(step: Callable[[], int], sync: Callable[[], None], steps: int, windows: int) -> float:
    """Median samples/s over ``windows`` runs of ``steps`` calls; ``step`` returns its samples."""
    rates = []
    for _ in range(windows):
        sync()
        started, samples = time.perf_counter(), 0
        for _ in range(steps):
            samples += step()
        sync()
        rates.append(samples / (time.perf_counter() - started))
    return statistics.median(rates)


def endless(make: Callable[[], Iterator]) -> Iterator:
    """Batches from a fresh iterator whenever one runs out (small datasets, many steps)."""
    while True:
        yield from make()


def model_step(model: Classifier, batch: tuple[Tensor, Tensor], trainer: L.Trainer):
    """One forward/backward/optimizer step on ``batch``, as the run would take it (compiled
    when the model compiles its loss)."""
    optimizer = model.optimizer(model.parameters(), lr=model.lr)
    x, y = batch

    def step() -> int:
        with trainer.precision_plugin.forward_context():
            _, loss = model.score(model, x, y, None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return len(y)

    return step


class StepTimer(L.Callback):
    """Times training batches ``start`` to the end, synchronising the device only there."""

    def __init__(self, start: int, sync: Callable[[], None]) -> None:
        self.start, self.sync = start, sync
        self.samples, self.began, self.ended = 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.start:
            self.sync()
            self.began = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step > self.start:
            self.samples += len(batch[1])
        if trainer.global_step == trainer.max_steps:
            self.sync()
            self.ended = time.perf_counter()

    @property
    def rate(self) -> float:
        return self.samples / (self.ended - self.began)


def diagnose(
    figures: Figures,
    cpus: int,
    channels_last: bool,
    compiled: bool,
    data_speedups: Sequence[str] = (),
) -> None:
    """Fill in ``bound`` and ``advice`` from the three throughputs; ``data_speedups`` are the
    data module's own switches for a GPU that waits for data."""
    on_gpu = figures.device.startswith("cuda")
    if figures.loader < INPUT_MARGIN * figures.model_step:
        figures.bound = "data loading: the device waits for batches"
        if figures.num_workers < cpus - 1:
            figures.advice.append(
                f"more loader workers: --data.num_workers (now {figures.num_workers}, "
                f"{cpus} CPUs here)"
            )
        if on_gpu:
            figures.advice += data_speedups
        figures.advice.append("a larger --data.batch_size amortises per-batch work")
    elif figures.train_step < OVERHEAD_LIMIT * figures.model_step:
        figures.bound = "the training loop: host work and syncs between steps"
        figures.advice.append("log less often: --trainer.log_every_n_steps")
        if on_gpu:
            sync_mode = "torch.cuda.set_sync_debug_mode('warn')"
            figures.advice.append(f"find host syncs with {sync_mode} in your own code")
        figures.advice.append("a larger --data.batch_size makes per-step work a smaller share")
    else:
        figures.bound = "the model: the device is busy computing"
        if on_gpu and figures.precision in {"32-true", "32"}:
            figures.advice.append("mixed precision: --trainer.precision bf16-mixed")
        if on_gpu and not channels_last:
            figures.advice.append("NHWC layout for convolutions: --model.channels_last true")
        if not compiled:
            figures.advice.append("compile the model: --model.compile true")
        figures.advice.append("a larger batch if memory allows, or a smaller network")
