"""DataLoader settings, resolved for the machine a run lands on.

The shipped config says ``num_workers: auto`` and ``pin_memory: null``, so the same file
suits a laptop and a GPU server; what was chosen is printed and saved as ``loader.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt
from lightning.pytorch.accelerators import CUDAAccelerator

MAX_AUTO_WORKERS = 8  # beyond this, in-memory uint8 batches gain nothing measurable

# Bounded types for the data modules' parameters: the command line refuses a value out of
# bounds when it parses the config, before a run directory is made or any data is read.
Workers = NonNegativeInt | Literal["auto"]
BatchSize = PositiveInt
Prefetch = PositiveInt | None
Fraction = OpenUnitInterval
GroupSize = PositiveInt


@dataclass
class LoaderSettings:
    """What the loaders of one run use, and why."""

    batch_size: int
    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None
    reason: str
    resident: bool = False  # training batches gathered on the device, not from workers
    augment_on_device: bool = False  # whole batches augmented after the transfer
    device_path: str = ""  # why those two (images)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``DataLoader``: PyTorch rejects ``persistent_workers`` and
        ``prefetch_factor`` without worker processes, so they only come with workers."""
        kwargs: dict[str, Any] = {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
        }
        if self.num_workers > 0:
            kwargs["persistent_workers"] = self.persistent_workers
            if self.prefetch_factor is not None:
                kwargs["prefetch_factor"] = self.prefetch_factor
        return kwargs

    def describe(self) -> str:
        pinned = "pinned" if self.pin_memory else "unpinned"
        line = (
            f"Loader: batch {self.batch_size}, {self.num_workers} workers, {pinned} memory "
            f"({self.reason})"
        )
        if self.resident:
            line += "; the training split is resident on the device, batches gathered there"
        return line + (f"\nData path: {self.device_path}" if self.device_path else "")

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def available_cpus() -> int:
    """CPUs this process may run on (a container's or scheduler's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_loader(
    batch_size: int,
    num_workers: Workers,
    pin_memory: bool | None,
    persistent_workers: bool,
    prefetch_factor: int | None,
    trainer: L.Trainer | None = None,
) -> LoaderSettings:
    """Settings for this machine and this trainer (None: outside a trainer, on the CPU).

    ``auto`` workers: none when training on the CPU, whose cores already run the model;
    with GPUs, the CPUs left per device after its main process, at most
    ``MAX_AUTO_WORKERS``. ``pin_memory=None`` pins when the batches go to a CUDA GPU.
    """
    on_gpu = trainer is not None and isinstance(trainer.accelerator, CUDAAccelerator)
    devices = trainer.num_devices if trainer is not None else 1
    cpus = available_cpus()
    if num_workers == "auto":
        workers = min(MAX_AUTO_WORKERS, max(cpus // devices - 1, 0)) if on_gpu else 0
        reason = f"auto: {cpus} CPUs, {devices} {'GPU' if on_gpu else 'CPU'} process(es)"
    else:
        workers, reason = num_workers, "as configured"
    pin = on_gpu if pin_memory is None else pin_memory
    return LoaderSettings(batch_size, workers, pin, persistent_workers, prefetch_factor, reason)
