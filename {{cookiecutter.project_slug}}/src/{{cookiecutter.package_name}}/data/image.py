"""Image classification data: the embedded digits, a folder of your images, or a torchvision
dataset; checked, cleaned, split by the seed and held in memory as ``uint8``."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch.utils.data import Dataset
from torchvision.transforms import v2

from . import image_sources
from .base import CheckedDataModule, Prepared
from .checks import (
    class_imbalance,
    cross_split_duplicates,
    imbalance_remedy,
    within_split_duplicates,
)
from .findings import Finding, nothing_usable
from .image_checks import (
    MIN_HASHED_SIDE,
    ImageRules,
    inspect,
    near_duplicates,
    perceptual_hash,
    unreadable,
)
from .image_sources import MODES, ImageSource, to_pixels
from .manifest import fingerprint
from .split import SPLITS, assign_splits


class ImageTensorDataset(Dataset):
    """``uint8`` images in memory, served as floats in [0, 1] with an optional transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index].float() / 255
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


class ImageDataModule(CheckedDataModule):
    """Images split by a seed into train/val/test, augmented on the training split only.

    Pixels are scaled to [0, 1]; standardisation is not done here but by the model, with
    statistics from :meth:`train_statistics`, so that serving sees the same preprocessing.
    Image size, channels and class names are fitted on the training split and saved in
    checkpoints, so ``predict`` needs none of the training data.
    """

    def __init__(
        self,
        root: Path | None = None,
        torchvision: str | None = None,
        download: bool = True,
        predict_root: Path | None = None,
        image_size: int | tuple[int, int] | None = None,
        channels: Literal[1, 3] | None = None,
        rules: ImageRules = ImageRules(),  # noqa: B008 (a frozen default, read only)
        near_duplicate_distance: int = 4,
        profile: bool = True,
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
        fitted_from: Path | None = None,
    ) -> None:
        """
        Args:
            root: A folder of images, ``DIR/<class>/*`` or ``DIR/{train,val,test}/<class>/*``;
                with ``torchvision``, where the dataset is downloaded. None (and no
                ``torchvision``): the embedded 8x8 digits.
            torchvision: A torchvision dataset with train/test parts, e.g. MNIST or CIFAR10.
            download: Let torchvision download the dataset into ``root`` when it is missing.
            predict_root: Images for ``predict``: every image file under this folder.
            image_size: Height and width (one number: square) every image is resized to;
                None: the most common size among the training images.
            channels: 3 (RGB) or 1 (greyscale); None: what most training images are.
            rules: What ``fit`` does about each check's findings (see ``profile.json``).
            near_duplicate_distance: Largest perceptual-hash distance (bits of 64) at which a
                validation/test image counts as a near-duplicate of a training image.
            profile: Write ``profile.json`` and pictures of the data at the start of ``fit``.
            seed: Fixes the split; LightningCLI links it to ``seed_everything``.
            val_fraction: Share of the samples held out for validation.
            test_fraction: Share of the samples held out for the final test (unless the data
                brings its own test split).
            batch_size: Samples per batch (per device under DDP).
            augment: Random affine jitter on training images.
            rotation_degrees: Largest random rotation.
            translate: Largest random shift, as a fraction of the image size.
            num_workers: Loader worker processes.
            pin_memory: Page-locked host memory for faster host-to-GPU copies.
            persistent_workers: Keep workers alive between epochs.
            prefetch_factor: Batches each worker loads ahead.
            fitted_from: A checkpoint whose fitted data state (class names, image size,
                channels) to use instead of fitting one; the CLI sets it from ``--ckpt_path``.
        """
        super().__init__(
            seed, val_fraction, test_fraction, batch_size, num_workers, pin_memory,
            persistent_workers, prefetch_factor, profile, fitted_from,
        )  # fmt: skip
        self.root, self.torchvision, self.download = root, torchvision, download
        self.predict_root = predict_root
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.channels, self.rules = channels, rules
        self.near_duplicate_distance = near_duplicate_distance
        self.train_transform = (
            v2.RandomAffine(degrees=rotation_degrees, translate=(translate, translate))
            if augment
            else None
        )

    def source(self) -> ImageSource:
        if self.torchvision is not None:
            return image_sources.torchvision_dataset(
                self.torchvision, self.root or Path("data"), self.download
            )
        return image_sources.folder(self.root) if self.root else image_sources.digits()

    def describe_source(self) -> str:
        if self.torchvision is not None:
            return f"torchvision {self.torchvision} in {self.root or 'data'}"
        return str(self.root) if self.root else "the embedded digits"

    def prepare(self) -> Prepared:
        source = self.source()
        findings: list[Finding] = []
        headers = self.open_all(source, findings)
        if not headers:
            raise nothing_usable(self.describe_source(), findings)
        opened = np.array(sorted(headers), dtype=int)
        class_names = sorted(set(source.labels))
        codes = np.array([class_names.index(label) for label in source.labels])
        given = [source.splits[i] for i in opened]
        split_names = assign_splits(
            codes[opened], given, self.val_fraction, self.test_fraction, self.seed
        )
        split_of = dict(zip(opened.tolist(), split_names, strict=True))
        train_headers = [headers[i] for i in opened if split_of[i] == "train"]
        channels = self.channels or fitted_channels(mode for mode, _ in train_headers)
        width, height = Counter(size for _, size in train_headers).most_common(1)[0][0]
        size = self.image_size or (height, width)

        decoded = self.decode_all(source, opened, channels, size, findings)
        if not any(split_of[i] == "train" for i in decoded):
            raise nothing_usable(self.describe_source(), findings)
        ids = [source.ids[i] for i in decoded]
        splits = np.array([split_of[i] for i in decoded], dtype=object)
        pixels = np.stack([decoded[i] for i in decoded])
        hashes = [hashlib.sha1(array.tobytes()).hexdigest() for array in pixels]
        leaks = cross_split_duplicates(ids, hashes, splits, self.rules.duplicate_across_splits)
        leaks += self.near_duplicates(ids, pixels, splits, min(width, height, *size))
        findings += leaks + within_split_duplicates(ids, hashes)
        dropped = {f.subject for f in leaks if f.action == "drop"}
        use = np.array([sample not in dropped for sample in ids], dtype=bool)

        images = torch.from_numpy(pixels[use])
        labels = torch.as_tensor(codes[list(decoded)])[use]
        splits, ids = splits[use], [sample for sample, u in zip(ids, use, strict=True) if u]
        train_labels = labels[splits == "train"].numpy()
        imbalance = class_imbalance(train_labels, class_names, self.rules.class_imbalance)
        findings.append(imbalance)
        state = {
            "class_names": class_names,
            "input_shape": [channels, *size],
            "image_size": list(size),
            "channels": channels,
            **imbalance_remedy(imbalance, train_labels, len(class_names)),
        }
        datasets = {
            split: ImageTensorDataset(
                images[splits == split],
                labels[splits == split],
                self.train_transform if split == "train" else None,
            )
            for split in SPLITS
        }
        names = [class_names[c] for c in labels.tolist()]
        counts = {
            "source": self.describe_source(),
            "files": len(source.ids),
            "per_split": {split: len(datasets[split]) for split in SPLITS},
            "image_size": list(size),
            "channels": channels,
        }
        digest = fingerprint(ids, [h for h, u in zip(hashes, use, strict=True) if u], names)
        return Prepared(
            datasets, train_labels, ids, names, list(splits), digest, findings, state, counts
        )

    def open_all(self, source: ImageSource, findings: list[Finding]) -> dict[int, tuple]:
        """(mode, (width, height)) of every sample that opens as an image; headers only."""
        headers = {}
        for i in range(len(source.ids)):
            try:
                with source.read(i) as image:
                    headers[i] = (image.mode, image.size)
            except Exception as error:  # whatever fails to open is a finding, not a crash
                findings.append(unreadable(source.subject(i), error, self.rules))
        return headers

    def decode_all(
        self,
        source: ImageSource,
        indices: np.ndarray,
        channels: int,
        size: tuple[int, int],
        findings: list[Finding],
    ) -> dict[int, np.ndarray]:
        """Pixels of every sample that decodes and that no rule drops, by sample index."""
        decoded = {}
        for i in indices.tolist():
            subject = source.subject(i)
            try:
                with source.read(i) as image:
                    image.load()
                    found = inspect(image, subject, MODES[channels], size, self.rules)
                    pixels = to_pixels(image, channels, size)
            except Exception as error:  # truncated files open, then fail to decode
                findings.append(unreadable(subject, error, self.rules))
                continue
            findings += found
            if not any(f.action == "drop" for f in found):
                decoded[i] = pixels
        return decoded

    def near_duplicates(
        self, ids: list[str], pixels: np.ndarray, splits: np.ndarray, smallest_side: int
    ) -> list[Finding]:
        if smallest_side < MIN_HASHED_SIDE:
            message = f"skipped: images under {MIN_HASHED_SIDE} px are too small to hash"
            return [Finding("near_duplicate_across_splits", "info", "dataset", message)]
        hashes = [perceptual_hash(array) for array in pixels]
        rule = self.rules.near_duplicate_across_splits
        return near_duplicates(ids, hashes, splits, self.near_duplicate_distance, rule)

    def train_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training images, shaped (C, 1, 1)."""
        train = self.prepared.datasets["train"].images.float() / 255
        return train.mean(dim=(0, 2, 3)).view(-1, 1, 1), train.std(dim=(0, 2, 3)).view(-1, 1, 1)

    def dataset(self, split: str, augment: bool = False) -> ImageTensorDataset:
        """One split's images; training augmentation only when ``augment`` asks for it."""
        data = self.prepared.datasets[split]
        return data if augment else ImageTensorDataset(data.images, data.labels)

    def read_predict_inputs(self) -> tuple[Dataset, list[str]] | None:
        """Every image under ``predict_root``, converted as in training; bad files skipped."""
        if self.predict_root is None:
            return None
        source = image_sources.predict_folder(self.predict_root)
        size, channels = tuple(self.state["image_size"]), self.state["channels"]
        arrays, ids = [], []
        for i, sample_id in enumerate(source.ids):
            try:
                with source.read(i) as image:
                    arrays.append(to_pixels(image, channels, size))
            except Exception as error:
                print(f"Skipped {source.subject(i)}: {type(error).__name__}: {error}")
                continue
            ids.append(sample_id)
        images = torch.from_numpy(np.stack(arrays))
        return ImageTensorDataset(images, torch.full((len(ids),), -1)), ids

    def profile_figures(self) -> dict[str, Figure]:
        train = self.prepared.datasets["train"]
        return {"samples": sample_grid(train.images, train.labels, self.class_names)}


def fitted_channels(modes: Iterable[str]) -> int:
    """1 when most training images are greyscale, else 3 (RGB)."""
    grey = Counter(mode in {"1", "L", "LA", "I", "I;16", "F"} for mode in modes)
    return 1 if grey[True] > grey[False] else 3


def sample_grid(
    images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], per_class: int = 8
) -> Figure:
    """The first ``per_class`` images of each class: one row per class."""
    rows = len(class_names)
    fig, axes = plt.subplots(rows, per_class, figsize=(per_class, rows), squeeze=False)
    for row, name in enumerate(class_names):
        chosen = (labels == row).nonzero().flatten()[:per_class]
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(chosen):
                image = images[chosen[col]].permute(1, 2, 0).squeeze(-1).numpy()
                ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        axes[row][0].set_title(name, fontsize=8, loc="left")
    fig.suptitle("Training samples per class")
    fig.tight_layout()
    return fig
