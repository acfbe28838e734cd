"""Where training images wait and where they are augmented, chosen for the device a run
trains on (``resident: auto``, ``augment_on_device: auto``).

Measured with ``benchmarks/throughput.py`` on an H200 (ResNet-18, 32x32, batch 512, bf16),
against the fastest plain loop: the training split resident on the GPU and augmented there
0.85-0.89, batches from loader workers augmented in the workers 0.79, the same batches
augmented on the device 0.67. So ``auto`` keeps the split on the GPU when it fits and
augments there only then; otherwise the workers augment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .resident import MAX_SHARE

Auto = bool | Literal["auto"]


@dataclass(frozen=True)
class DevicePath:
    resident: bool
    augment_on_device: bool
    reason: str


def choose(
    resident: Auto, augment_on_device: Auto, device: torch.device, needed: int, free: int | None
) -> DevicePath:
    """The path for a training split of ``needed`` bytes on ``device`` with ``free`` bytes
    of memory free (None off a GPU). A resident split is always augmented on the device."""
    if resident == "auto":
        on_gpu = device.type == "cuda" and free is not None
        resident = on_gpu and needed <= MAX_SHARE * free
        if resident:
            why = f"the training split ({needed / 2**20:,.0f} MiB) fits on {device}"
        elif on_gpu:
            why = (
                f"the training split ({needed / 2**30:.2f} GiB) takes more than "
                f"{MAX_SHARE:.0%} of {device}'s free {free / 2**30:.2f} GiB"
            )
        else:
            why = f"training on {device.type}, not a CUDA GPU"
        reason = f"resident auto: {why}"
    else:
        reason = f"resident {str(resident).lower()} as configured"
    if augment_on_device == "auto":
        augment_on_device = resident
        where = "on the device" if resident else "in the loader workers"
        reason += f"; augmentation auto: {where}"
    else:
        augment_on_device = augment_on_device or resident
        reason += f"; augmentation {'on the device' if augment_on_device else 'in the workers'}"
    return DevicePath(bool(resident), bool(augment_on_device), reason)
