"""The training order as a function of (seed, epoch) alone, and the place in it a checkpoint
holds, so that a resumed run draws exactly what an uninterrupted one draws.

A generator carried from epoch to epoch (DataLoader's ``shuffle=True, generator=...``, or
``WeightedRandomSampler``) makes each epoch's order depend on every draw before it, the
workers' seeds included; a resumed run draws those in another order and shuffles every later
epoch differently. Here each epoch draws from a generator seeded by the seed and the epoch;
Lightning's ``set_epoch`` says which epoch it is, and ``state_dict`` (saved in checkpoints
through the StatefulDataLoader) says which epoch it was and how many of its samples were served.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset, DistributedSampler


def mixed_seed(*values: int) -> int:
    """A 64-bit seed hashed from non-negative integers: nearby inputs (seed 42 epoch 1, seed 43
    epoch 0) give unrelated seeds, which ``seed + epoch`` would not."""
    packed = struct.pack(f"<{len(values)}Q", *values)
    return int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "little")


class SampleKey(NamedTuple):
    """A training sample as :class:`EpochSampler` names it to a dataset that asks for keys
    (``takes_sample_keys``): its position, and the seed and epoch its augmentation follows."""

    seed: int
    epoch: int
    index: int


class EpochSampler(DistributedSampler):
    """Each epoch's training samples for this rank: a permutation, or draws weighted per
    sample (class balancing), seeded by ``mixed_seed(seed, epoch)``.

    A DistributedSampler, so that Lightning takes it as the rank's shard and leaves it alone:
    with several ranks every rank draws the same order and serves every ``num_replicas``-th
    sample of it, the tail that would not share evenly dropped.
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int,
        weights: Sequence[float] | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle=True, seed=seed, drop_last=True)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.keys = bool(getattr(dataset, "takes_sample_keys", False))
        self.served = 0  # samples of ``epoch`` handed out: what a checkpoint resumes after
        self.resume: tuple[int, int] | None = None  # (epoch, served) loaded from a checkpoint

    def order(self, epoch: int) -> torch.Tensor:
        """Every sample this rank serves in ``epoch``, in order."""
        generator = torch.Generator().manual_seed(mixed_seed(self.seed, epoch))
        n = len(self.dataset)
        if self.weights is None:
            drawn = torch.randperm(n, generator=generator)
        else:  # as WeightedRandomSampler draws: n samples, with replacement
            drawn = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return drawn[: self.total_size][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int | SampleKey]:
        # A generator: nothing is drawn until the first sample is asked for, which Lightning
        # does after set_epoch, though it calls iter() before.
        epoch, start = self.epoch, 0
        if self.resume is not None and self.resume[0] == epoch:
            start = self.resume[1]
        self.resume, self.served = None, start
        for index in self.order(epoch)[start:].tolist():
            self.served += 1
            yield SampleKey(self.seed, epoch, index) if self.keys else index

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.served = 0
        super().set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "served": self.served}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch, self.served = state_dict["epoch"], state_dict["served"]
        self.resume = (self.epoch, self.served)
