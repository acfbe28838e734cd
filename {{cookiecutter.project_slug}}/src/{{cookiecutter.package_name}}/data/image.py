"""Image classification data: scikit-learn's bundled 8x8 digits, no download needed."""

from __future__ import annotations

from functools import cached_property

import lightning as L
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from .loading import loader_kwargs
from .split import SPLITS, Split, stratified_split


class ImageTensorDataset(Dataset):
    """Images held in memory as one tensor, with an optional per-sample transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


class ImageDataModule(L.LightningDataModule):
    """Digits split by a seed into train/val/test, augmented on the training split only.

    Pixels are scaled to [0, 1]; standardisation is not done here but by the model, with
    statistics from :meth:`train_statistics`, so that serving sees the same preprocessing.
    """

    def __init__(
        self,
        seed: int = 42,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        batch_size: int = 64,
        augment: bool = True,
        rotation_degrees: float = 10.0,  # digits tilt a little when written; more confuses 6/9
        translate: float = 0.1,  # fraction of the image: ~1 pixel at 8x8
        num_workers: int = 0,  # 0 loads in the main process: in-memory tensors need no workers
        pin_memory: bool | None = None,  # None: pin when CUDA is available
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
    ) -> None:
        """
        Args:
            seed: Fixes the split; LightningCLI links it to ``seed_everything``.
            val_fraction: Share of all samples held out for validation.
            test_fraction: Share of all samples held out for the final test.
            batch_size: Samples per batch (per device under DDP).
            augment: Random affine jitter on training images.
            rotation_degrees: Largest random rotation.
            translate: Largest random shift, as a fraction of the image size.
            num_workers: Loader worker processes.
            pin_memory: Page-locked host memory for faster host-to-GPU copies.
            persistent_workers: Keep workers alive between epochs.
            prefetch_factor: Batches each worker loads ahead.
        """
        super().__init__()
        self.seed, self.val_fraction, self.test_fraction = seed, val_fraction, test_fraction
        self.train_transform = (
            v2.RandomAffine(degrees=rotation_degrees, translate=(translate, translate))
            if augment
            else None
        )
        self.loader_kwargs = loader_kwargs(
            batch_size, num_workers, pin_memory, persistent_workers, prefetch_factor
        )

    @cached_property
    def _arrays(self) -> tuple[torch.Tensor, np.ndarray]:
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # N,1,8,8
        return images, digits.target

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_names(self) -> list[str]:
        return [str(label) for label in np.unique(self._arrays[1])]

    @property
    def input_shape(self) -> list[int]:
        return list(self._arrays[0].shape[1:])

    @cached_property
    def split_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train, val, test) sample indices: a function of the seed and fractions only."""
        return stratified_split(self._arrays[1], self.val_fraction, self.test_fraction, self.seed)

    def train_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training images, shaped (C, 1, 1)."""
        train = self._arrays[0][self.split_indices[0]]
        return train.mean(dim=(0, 2, 3)).view(-1, 1, 1), train.std(dim=(0, 2, 3)).view(-1, 1, 1)

    def dataset(self, split: Split, augment: bool = False) -> ImageTensorDataset:
        """One split; ``augment`` applies the training augmentation (if enabled)."""
        images, labels = self._arrays
        indices = self.split_indices[SPLITS.index(split)]
        transform = self.train_transform if augment else None
        return ImageTensorDataset(images[indices], torch.as_tensor(labels[indices]), transform)

    def train_dataloader(self) -> DataLoader:
        train = self.dataset("train", augment=True)
        return DataLoader(train, shuffle=True, drop_last=True, **self.loader_kwargs)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), **self.loader_kwargs)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("test"), **self.loader_kwargs)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
