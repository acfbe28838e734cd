"""DataLoader settings shared by every data module."""

from __future__ import annotations

from typing import Any

import torch


def loader_kwargs(
    batch_size: int,
    num_workers: int,
    pin_memory: bool | None,
    persistent_workers: bool,
    prefetch_factor: int | None,
) -> dict[str, Any]:
    """Keyword arguments for ``DataLoader`` that are valid for any ``num_workers``.

    PyTorch rejects ``persistent_workers`` and ``prefetch_factor`` without worker
    processes, so they are only passed when there are workers. ``pin_memory=None``
    pins only when a GPU is there to receive the batches.
    """
    kwargs: dict[str, Any] = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "pin_memory": torch.cuda.is_available() if pin_memory is None else pin_memory,
    }
    if num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    return kwargs
