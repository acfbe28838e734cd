"""A training split held in the accelerator's memory and gathered there by index.

For image sets that fit on the device (CIFAR-size), this takes the loader workers, the copies
between processes, page-locking and the host-to-device copy of every batch out of each step:
the sampler still decides which samples form a batch (shuffling, DDP shards, class balancing
and resuming work as they do for host batches), but only its indices travel to the device.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .findings import DataError
from .image_cache import ImageTensorDataset

MAX_SHARE = 0.5  # of the device's free memory: the rest is the model's, its activations' ...


class SampleIndices(Dataset):
    """Positions ``0 .. n-1`` of a split; a batch of them arrives as one ``int64`` tensor."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index

    def __getitems__(self, indices: list[int]) -> Tensor:
        return torch.tensor(indices, dtype=torch.int64)


def check_fits(needed: int, free: int, device: torch.device) -> None:
    """Refuse a split that would take more than ``MAX_SHARE`` of the device's free memory."""
    if needed > MAX_SHARE * free:
        raise DataError(
            f"data.resident: the training split needs {needed / 2**30:.2f} GiB on {device}, "
            f"which has {free / 2**30:.2f} GiB free (at most {MAX_SHARE:.0%} may go to data). "
            "Set data.resident false: loader workers then stream batches from host memory."
        )


class ResidentSplit:
    """A split's ``uint8`` images and labels, copied once to the device its first batch of
    indices lands on, and gathered there."""

    def __init__(self, dataset: ImageTensorDataset) -> None:
        self.dataset = dataset
        self.tensors: tuple[Tensor, Tensor] | None = None

    @property
    def nbytes(self) -> int:
        return len(self.dataset) * self.dataset.images[0].nbytes

    def upload(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device.type == "cuda":
            check_fits(self.nbytes, torch.cuda.mem_get_info(device)[0], device)
        images = torch.from_numpy(self.dataset.pixels(range(len(self.dataset))))
        return images.to(device), self.dataset.labels.to(device)

    def gather(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """The images and labels of the samples at ``indices``, on the indices' device."""
        if self.tensors is None or self.tensors[0].device != indices.device:
            self.tensors = self.upload(indices.device)
        images, labels = self.tensors
        return images[indices], labels[indices]
