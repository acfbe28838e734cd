"""Geometric training augmentation two ways with one distribution: per sample in DataLoader
workers (torchvision v2), or per batch on whatever device the batch is on (:class:`BatchAugment`),
where the CPU would otherwise be the bottleneck.

Per sample, the draws are a function of (seed, epoch, sample index) (:class:`KeyedTransform`),
not of the worker that happens to run them: a resumed run, with or without loader workers,
augments every sample as the uninterrupted run did. Per batch, they come from the device's
global generator in the main process, whose state checkpoints carry (``Resumable``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from .sampling import SampleKey, mixed_seed


@dataclass(frozen=True)
class Augmentation:
    """Random jitter of training images: affine, then crop, then flip."""

    rotation_degrees: float = 0.0  # uniform in [-deg, deg], like v2.RandomAffine
    translate: float = 0.0  # fraction of width/height, drawn and rounded like v2.RandomAffine
    crop_padding: int = 0  # zero-pad, then crop back to the size at random, like v2.RandomCrop
    horizontal_flip: bool = False  # p = 0.5, like v2.RandomHorizontalFlip

    def __post_init__(self) -> None:
        if self.rotation_degrees < 0 or not 0 <= self.translate <= 1 or self.crop_padding < 0:
            raise ValueError(f"{self}: needs rotation, padding >= 0 and translate in [0, 1]")

    @property
    def affine(self) -> bool:
        return self.rotation_degrees > 0 or self.translate > 0

    @property
    def active(self) -> bool:
        return self.affine or self.crop_padding > 0 or self.horizontal_flip

    def cpu_transform(self) -> v2.Transform | None:
        """Per-sample pipeline for (C, H, W) tensors; None when there is nothing to do."""
        steps: list[v2.Transform] = []
        if self.affine:
            steps.append(v2.RandomAffine(self.rotation_degrees, translate=(self.translate,) * 2))
        if self.crop_padding:
            steps.append(v2.Lambda(partial(random_crop, padding=self.crop_padding), Tensor))
        if self.horizontal_flip:
            steps.append(v2.RandomHorizontalFlip())
        return v2.Compose(steps) if steps else None


class KeyedTransform:
    """A per-sample transform whose draws, given a :class:`SampleKey`, follow from the key alone.

    torchvision's transforms draw from torch's global CPU generator, which each loader worker
    seeds for itself; here it is seeded from the key for each sample and put back as it was,
    so the draws are the same in any process, and the caller's stream (dropout's, in the main
    process) is untouched. Without a key it draws from the generator as it stands.
    """

    def __init__(self, transform: v2.Transform) -> None:
        self.transform = transform

    def __call__(self, image: Tensor, key: SampleKey | None = None) -> Tensor:
        if key is None:
            return self.transform(image)
        generator = torch.default_generator  # not torch.manual_seed: that reseeds CUDA's too
        state = generator.get_state()
        generator.manual_seed(mixed_seed(*key))
        try:
            return self.transform(image)
        finally:
            generator.set_state(state)


@lru_cache(maxsize=8)
def _cropper(size: tuple[int, int], padding: int) -> v2.RandomCrop:
    return v2.RandomCrop(size, padding=padding)


def random_crop(image: Tensor, padding: int) -> Tensor:
    """``v2.RandomCrop`` back to the image's own size, which :class:`Augmentation` doesn't know."""
    return _cropper(tuple(image.shape[-2:]), padding)(image)


class Draws(NamedTuple):
    """One sample's parameters per row, in torchvision's terms."""

    angle: Tensor | None  # (N,) degrees; None without an affine part
    translate: Tensor | None  # (N, 2) whole pixels (tx, ty), as RandomAffine rounds them
    crop: Tensor  # (N, 2) crop corner (left, top) in the padded image
    flip: Tensor  # (N,) bool


class BatchAugment(torch.nn.Module):
    """:class:`Augmentation` applied to a (N, C, H, W) batch on its own device, as one warp
    (or, without an affine part, one gather)."""

    # torchvision v2 transforms given a batch tensor draw ONE parameter set for the whole batch
    # (every image gets the same shift); this draws per sample, from ``generator`` (the data
    # module seeds one per batch) or else the global torch RNG.

    def __init__(self, augmentation: Augmentation) -> None:
        super().__init__()
        self.augmentation = augmentation

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.augmentation.active:
            return images
        n, _, height, width = images.shape
        return self.transform(images, self.draw(n, height, width, images.device, generator))

    def transform(self, images: Tensor, draws: Draws) -> Tensor:
        """Every image moved by its own draws (not ``apply``: that is ``nn.Module``'s)."""
        return self.warp(images, draws) if self.augmentation.affine else self.shift(images, draws)

    def draw(
        self,
        n: int,
        height: int,
        width: int,
        device: torch.device,
        generator: torch.Generator | None = None,
    ) -> Draws:
        """Per-sample parameters, each drawn as its torchvision transform draws its one."""
        aug, rng = self.augmentation, generator

        def uniform(limit: float) -> Tensor:
            return torch.empty(n, device=device).uniform_(-limit, limit, generator=rng)

        angle = translate = None
        if aug.affine:
            angle = uniform(aug.rotation_degrees)
            shifts = [uniform(aug.translate * width), uniform(aug.translate * height)]
            translate = torch.stack(shifts, 1).round_()
        crop = torch.randint(0, 2 * aug.crop_padding + 1, (n, 2), device=device, generator=rng)
        if aug.horizontal_flip:
            flip = torch.rand(n, device=device, generator=rng) < 0.5
        else:
            flip = torch.zeros(n, dtype=torch.bool, device=device)
        return Draws(angle, translate, crop, flip)

    def warp(self, images: Tensor, draws: Draws) -> Tensor:
        """Every image moved by its own draws, in one ``grid_sample`` (nearest, zero fill).

        Pixel coordinates are centred, as in torchvision: output pixel q reads the crop at
        u = flip(q) - shift and the affine output at u, which reads the input at R^-1 (u - t).
        """
        assert draws.angle is not None and draws.translate is not None, "no affine draws"
        height, width = images.shape[-2:]
        # float32 at least: half-precision coordinates can't address every pixel of large images.
        native = images.dtype in (torch.float32, torch.float64)
        work = images if native else images.float()
        dtype, device = work.dtype, work.device
        radians = draws.angle.to(dtype).deg2rad()
        cos, sin = radians.cos(), radians.sin()
        sign = 1 - 2 * draws.flip.to(dtype)
        shift = self.augmentation.crop_padding - draws.crop.to(dtype)
        sx, sy = (shift + draws.translate.to(dtype)).unbind(1)
        theta = torch.stack(
            [
                torch.stack([sign * cos, sin, -cos * sx - sin * sy], 1) / (width / 2),
                torch.stack([-sign * sin, cos, sin * sx - cos * sy], 1) / (height / 2),
            ],
            1,
        )
        xs = torch.arange(width, dtype=dtype, device=device) - (width - 1) / 2
        ys = torch.arange(height, dtype=dtype, device=device) - (height - 1) / 2
        # Broadcast sums, not a (H*W, 3) @ (3, 2) matmul: that is slower than the sampling.
        column = theta.transpose(1, 2)[:, :, None, None, :]
        grid = column[:, 0] * xs[:, None] + (column[:, 1] * ys[:, None, None] + column[:, 2])
        if self.augmentation.crop_padding and self.augmentation.affine:
            # The crop's zero border must stay zero though the affine part could fill it.
            inside_x = (sign[:, None] * xs - shift[:, :1]).abs() <= (width - 1) / 2
            inside_y = (ys - shift[:, 1:]).abs() <= (height - 1) / 2
            inside = inside_y[:, :, None, None] & inside_x[:, None, :, None]
            grid = torch.where(inside, grid, -4.0)
        out = F.grid_sample(work, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        return out if native else out.to(images.dtype)

    def shift(self, images: Tensor, draws: Draws) -> Tensor:
        """Crop and flip alone (the usual CIFAR recipe) as one gather of whole pixels from the
        zero-padded batch: any dtype as it is, and a third of ``warp``'s kernels, which
        count when Python launching them is what bounds a training step."""
        height, width = images.shape[-2:]
        pad = self.augmentation.crop_padding
        padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
        device = images.device
        columns = torch.arange(width, device=device)
        columns = torch.where(draws.flip[:, None], width - 1 - columns, columns) + draws.crop[:, :1]
        rows = torch.arange(height, device=device) + draws.crop[:, 1:]
        samples = torch.arange(len(images), device=device)[:, None, None, None]
        channels = torch.arange(images.shape[1], device=device)[:, None, None]
        return padded[samples, channels, rows[:, None, :, None], columns[:, None, None, :]]


def training_augmentation(
    augment: bool,
    on_device: bool,
    rotation_degrees: float,
    translate: float,
    crop_padding: int,
    horizontal_flip: bool,
) -> tuple[Augmentation, BatchAugment | None, KeyedTransform | None]:
    """The training augmentation (the identity when ``augment`` is off), its batched version
    when it runs ``on_device``, else the per-sample transform for the loader workers."""
    augmentation = Augmentation()
    if augment:
        augmentation = Augmentation(rotation_degrees, translate, crop_padding, horizontal_flip)
    if on_device:
        return augmentation, BatchAugment(augmentation), None
    transform = augmentation.cpu_transform()
    return augmentation, None, None if transform is None else KeyedTransform(transform)
