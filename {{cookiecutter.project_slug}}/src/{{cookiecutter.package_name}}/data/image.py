"""Image classification data: the embedded digits, a folder of your images, or a torchvision
dataset; checked, cleaned, split by the seed and served as ``uint8`` batches.

Folders and torchvision datasets are decoded once into a memory-mapped cache (see
``image_cache``); the embedded digits decode in milliseconds and stay in memory."""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from . import device_path, image_sources
from .augment import training_augmentation
from .base import CheckedDataModule, InputError, Prepared
from .checks import (
    class_imbalance,
    cross_split_duplicates,
    imbalance_remedy,
    within_split_duplicates,
)
from .device_path import Auto
from .findings import Finding, nothing_usable
from .groups import UNMAPPED, groups_of, read_group_mapping
from .image_cache import ImageTensorDataset, decode_cached
from .image_checks import ImageRules, inspect, near_duplicates, unreadable
from .image_decoding import (
    MAX_PIXELS,
    MODES,
    check_pixels,
    decode,
    open_image,
    png_bytes,
    shown_size,
    to_pixels,
)
from .image_profile import drift_profile, image_features, sample_grid
from .image_sources import ImageSource, fitted_channels
from .loading import BatchSize, Fraction, GroupSize, LoaderSettings, Prefetch, Workers
from .manifest import fingerprint
from .resident import ResidentSplit, SampleIndices
from .split import SPLITS, assign_splits, fold_splits

CPU = torch.device("cpu")

# Torchvision datasets of digits and letters: a mirrored glyph is another glyph or none.
GLYPH_DATASETS = {"MNIST", "EMNIST", "KMNIST", "QMNIST", "SVHN", "USPS", "Omniglot"}
# The rules decode_all applies: a change to one rebuilds the decode cache.
DECODING_RULES = ("unreadable_image", "channel_mismatch", "size_mismatch")


class ImageDataModule(CheckedDataModule):
    """Images split by a seed into train/val/test, augmented on the training split only.

    Pixels stay ``uint8``; scaling and standardisation are done by the model, with statistics
    from :meth:`train_statistics`, so that serving sees the same preprocessing.
    Image size, channels and class names are fitted on the training split and saved in
    checkpoints, so ``predict`` needs none of the training data.
    """

    collate_fn = staticmethod(ImageTensorDataset.collate)  # batches come whole: __getitems__
    serving_input = "files"
    # Shards carry this module's fitted state: a model trained on them predicts new images too.
    # By the key Lightning stores that module's state under in a checkpoint: its class name.
    states_also_from = ("StreamingImageDataModule",)
    device_speedups = (
        "augment on the device: --data.augment_on_device true",
        "images that fit on the GPU: --data.resident true",
    )

    def __init__(
        self,
        root: Path | None = None,
        torchvision: str | None = None,
        download: bool = True,
        predict_root: Path | None = None,
        group_mapping: Path | None = None,
        split_by_mapping: Path | None = None,
        max_group_gap: float = 0.05,
        min_group_size: GroupSize = 30,
        image_size: int | tuple[int, int] | None = None,
        channels: Literal[1, 3] | None = None,
        max_pixels: int = MAX_PIXELS,
        rules: ImageRules = ImageRules(),  # noqa: B008 (a frozen default, read only)
        near_duplicate_distance: int = 4,
        profile: bool = True,
        seed: int = 42,
        val_fraction: Fraction = 0.15,
        test_fraction: Fraction = 0.15,
        folds: int | None = None,
        fold: int | None = None,
        batch_size: BatchSize = 64,
        augment: bool = True,
        augment_on_device: Auto = "auto",
        resident: Auto = "auto",
        rotation_degrees: float = 10.0,  # digits tilt a little when written; more confuses 6/9
        translate: float = 0.1,  # fraction of the image: ~1 pixel at 8x8
        crop_padding: int = 0,
        horizontal_flip: bool | None = None,
        num_workers: Workers = "auto",
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: Prefetch = None,
        fitted_from: Path | None = None,
        cache_dir: Path | None = Path(".cache/images"),
    ) -> None:
        """
        Args:
            root: A folder of images, ``DIR/<class>/*`` or ``DIR/{train,val,test}/<class>/*``;
                with ``torchvision``, where the dataset is downloaded. None (and no
                ``torchvision``): the embedded 8x8 digits.
            torchvision: A torchvision dataset with train/test parts, e.g. MNIST or CIFAR10.
            download: Let torchvision download the dataset into ``root`` when it is missing.
            predict_root: Images for ``predict``: every image file under this folder.
            group_mapping: A CSV of ``id,group`` rows (ids as in ``split_manifest.csv``):
                ``test`` reports each group's metrics and the largest gap between groups;
                images it doesn't name form the group "(unmapped)".
            split_by_mapping: A CSV of ``id,group`` rows (e.g. each photo's patient or
                burst): the seed keeps each group's images in one split, stratified as far as
                whole groups allow; an image it doesn't name is a group of its own. Splits the
                data gives (a ``test`` folder) stay as given.
            max_group_gap: Largest difference of a test metric between two groups before
                ``test`` flags it.
            min_group_size: Test samples a group needs before its metrics can decide the gap.
            image_size: Height and width (one number: square) every image is resized to;
                None: the most common size among the training images.
            channels: 3 (RGB) or 1 (greyscale); None: what most training images are.
            max_pixels: Largest image (width x height) that fit, predict and serve decode;
                a larger one is refused from its header, before decoding, which takes 3-4
                bytes a pixel. The default, 8192x8192, passes 48-megapixel photos.
            rules: What ``fit`` does about each check's findings (see ``profile.json``).
            near_duplicate_distance: Largest perceptual-hash distance (bits of 64) at which a
                validation/test image counts as a near-duplicate of a training image.
            profile: Write ``profile.json`` and pictures of the data at the start of ``fit``.
            seed: Fixes the split; LightningCLI links it to ``seed_everything``.
            val_fraction: Share of the samples held out for validation.
            test_fraction: Share of the samples held out for the final test (unless the data
                brings its own test split).
            folds: Cross-validation (``cv`` sets it): the test split stays as without it,
                the other images (a given ``val`` folder's too) are cut into this many
                folds, stratified and seeded, of whole ``split_by_mapping`` groups when
                given; ``val_fraction`` is then unused.
            fold: The fold validated on (0-based); the other folds train.
            batch_size: Samples per batch (per device under DDP).
            augment: Random jitter of training images (never of val/test/predict).
            augment_on_device: Augment whole batches on the GPU after the transfer instead of
                each image in the loader, where the CPU would starve the GPU; same
                distribution either way. "auto": on the device when the split is resident,
                else in the workers (``data.device_path`` has the measurements).
            resident: Hold the training images in the accelerator's memory and gather each
                batch there: no loader workers or host copies in the step. For data that fits
                (at most half the free device memory); augmentation then runs on the device.
                "auto": when training on a CUDA GPU and the split fits. What was chosen and
                why: ``loader.json``.
            rotation_degrees: Largest random rotation.
            translate: Largest random shift, as a fraction of the image size.
            crop_padding: Zero-pad by this many pixels, then crop back at random (photos: 4).
            horizontal_flip: Mirror half the images; None: yes for photos (your folders, most
                torchvision datasets), no for digits and letters, which mirroring changes.
            num_workers: Loader worker processes; "auto": none when training on the CPU, the
                spare CPUs per GPU otherwise (see ``loader.json`` in the run directory).
            pin_memory: Page-locked host memory for faster host-to-GPU copies; None: when
                training on a CUDA GPU.
            persistent_workers: Keep workers alive between epochs.
            prefetch_factor: Batches each worker loads ahead.
            fitted_from: A checkpoint whose fitted data state (class names, image size,
                channels) to use instead of fitting one; the CLI sets it from ``--ckpt_path``.
            cache_dir: Where folders and torchvision datasets are kept decoded, so later runs
                skip decoding; rebuilt when a file, the image size or channels change.
                None: decode every run, write nothing.
        """
        super().__init__(
            seed, val_fraction, test_fraction, batch_size, num_workers, pin_memory,
            persistent_workers, prefetch_factor, profile, fitted_from, max_group_gap,
            min_group_size, folds, fold,
        )  # fmt: skip
        self.root, self.torchvision, self.download = root, torchvision, download
        self.predict_root, self.group_mapping = predict_root, group_mapping
        self.split_by_mapping = split_by_mapping
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.channels, self.rules, self.max_pixels = channels, rules, max_pixels
        self.near_duplicate_distance = near_duplicate_distance
        self.cache_dir = cache_dir
        self.path_options = {"resident": resident, "augment_on_device": augment_on_device}
        flip = self.shows_photos() if horizontal_flip is None else horizontal_flip
        self.jitter = {
            "augment": augment, "rotation_degrees": rotation_degrees, "translate": translate,
            "crop_padding": crop_padding, "horizontal_flip": flip,
        }  # fmt: skip
        # Until a trainer's device decides "auto": off, as on the CPU.
        self.batch_path = device_path.choose(resident, augment_on_device, CPU, 0, None)
        self.use_device_path(self.batch_path)

    @property
    def resident(self) -> bool:
        return self.batch_path.resident

    def use_device_path(self, path: device_path.DevicePath) -> None:
        self.batch_path = path
        self.augmentation, self.device_augment, self.train_transform = training_augmentation(
            on_device=path.augment_on_device, **self.jitter
        )
        if "prepared" in self.__dict__:  # the training set is built: swap its transform
            self.prepared.datasets["train"].transform = self.train_transform

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.trainer is not None:
            device = self.trainer.strategy.root_device
            free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
            needed = self.resident_split.nbytes
            path = device_path.choose(**self.path_options, device=device, needed=needed, free=free)
            self.use_device_path(path)
        super().setup(stage)

    def shows_photos(self) -> bool:
        """Whether mirrored images are still valid samples (not digits or letters)."""
        if self.torchvision is not None:
            return self.torchvision not in GLYPH_DATASETS
        return self.root is not None

    def training_batch(self, batch: Any) -> Any:
        """Gathered on the device when the split is resident, and augmented there when the
        augmentation runs on the device."""
        if self.resident:
            batch = self.resident_split.gather(batch)
        return super().training_batch(batch)

    def train_dataloader(self) -> StatefulDataLoader:
        if not self.resident:
            return super().train_dataloader()
        # Only indices: worker processes would cost more than they save.
        settings = replace(self.loader_settings, num_workers=0)
        return self.training_loader(SampleIndices(len(self.resident_split.dataset)), settings)

    @property
    def loader_settings(self) -> LoaderSettings:
        path = self.batch_path
        return replace(
            super().loader_settings, resident=path.resident,
            augment_on_device=path.augment_on_device, device_path=path.reason,
        )  # fmt: skip

    @cached_property
    def resident_split(self) -> ResidentSplit:
        return ResidentSplit(self.prepared.datasets["train"])

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
        mapping = read_group_mapping(self.group_mapping) if self.group_mapping else None
        source = self.source()
        findings: list[Finding] = []
        headers = self.open_all(source, findings)
        if not headers:
            raise nothing_usable(self.describe_source(), findings)
        opened = np.array(sorted(headers), dtype=int)
        class_names = sorted(set(source.labels))
        codes = np.array([class_names.index(label) for label in source.labels])
        given = [source.splits[i] for i in opened]
        kept_together = self.split_groups([source.ids[i] for i in opened])
        split_names = assign_splits(
            codes[opened], given, self.val_fraction, self.test_fraction, self.seed, class_names,
            kept_together,
        )  # fmt: skip
        if self.folds is not None:
            split_names = fold_splits(
                split_names, codes[opened], self.fold, self.folds, self.seed, kept_together
            )
        split_of = dict(zip(opened.tolist(), split_names, strict=True))
        train_headers = [headers[i] for i in opened if split_of[i] == "train"]
        channels = self.channels or fitted_channels(mode for mode, _ in train_headers)
        width, height = Counter(size for _, size in train_headers).most_common(1)[0][0]
        size = self.image_size or (height, width)

        rules = {name: getattr(self.rules, name) for name in DECODING_RULES}
        rules["max_pixels"] = self.max_pixels
        decoded = decode_cached(
            self.cache_dir, source, opened.tolist(), (channels, *size), rules,
            lambda out: self.decode_all(source, opened, channels, size, out),
        )  # fmt: skip
        findings += decoded.findings
        kept, pixels = decoded.kept, decoded.pixels
        if not any(split_of[i] == "train" for i in kept):
            raise nothing_usable(self.describe_source(), findings)
        ids = [source.ids[i] for i in kept]
        splits = np.array([split_of[i] for i in kept], dtype=object)
        hashes = [hashlib.sha1(array.tobytes()).hexdigest() for array in pixels]
        leaks = cross_split_duplicates(
            ids, hashes, codes[kept], splits, self.rules.duplicate_across_splits
        )
        leaks += near_duplicates(
            ids, pixels, splits, min(width, height, *size), self.near_duplicate_distance,
            self.rules.near_duplicate_across_splits,
        )  # fmt: skip
        findings += leaks + within_split_duplicates(ids, hashes, codes[kept], class_names)
        dropped = {f.subject for f in leaks if f.action == "drop"}
        use = np.array([sample not in dropped for sample in ids], dtype=bool)

        labels = torch.as_tensor(codes[kept])
        rows = {split: np.flatnonzero(use & (splits == split)) for split in SPLITS}
        train_labels = labels[rows["train"]].numpy()
        imbalance = class_imbalance(train_labels, class_names, self.rules.class_imbalance)
        findings.append(imbalance)
        original_sizes = [headers[i][1] for i in kept]
        state = {
            "class_names": class_names,
            "input_shape": [channels, *size],
            "image_size": list(size),
            "channels": channels,
            **imbalance_remedy(imbalance, train_labels, len(class_names)),
            # Sizes as the files have them, before resizing: the headers opened above.
            "drift_profile": drift_profile(pixels, rows["train"], original_sizes),
        }
        transforms = {"train": self.train_transform}
        datasets = {
            split: ImageTensorDataset(pixels, labels[r], transforms.get(split), rows=r)
            for split, r in rows.items()
        }
        splits, ids = splits[use], [sample for sample, u in zip(ids, use, strict=True) if u]
        names = [class_names[c] for c in labels[use].tolist()]
        counts = {
            "source": self.describe_source(),
            "files": len(source.ids),
            "per_split": {split: len(datasets[split]) for split in SPLITS},
            "image_size": list(size),
            "channels": channels,
        }
        digest = fingerprint(ids, [h for h, u in zip(hashes, use, strict=True) if u], names)
        groups = groups_of(ids, mapping, self.group_mapping) if mapping is not None else None
        if kept_together is not None:
            of = dict(zip((source.ids[i] for i in opened), kept_together, strict=True))
            kept_together = [of[sample] for sample in ids]
        return Prepared(
            datasets, train_labels, ids, names, list(splits), digest, findings, state, counts,
            groups, kept_together,
        )  # fmt: skip

    def split_groups(self, ids: list[str]) -> np.ndarray | None:
        """Each image's group from ``split_by_mapping``, or None without one."""
        if self.split_by_mapping is None:
            return None
        path, option = self.split_by_mapping, "split_by_mapping"
        mapping = read_group_mapping(path, option)
        groups_of(ids, mapping, path, option)  # refuses a mapping of none of these images
        return np.array([mapping.get(i, f"{UNMAPPED} {i}") for i in ids], dtype=object)

    def split_settings(self) -> dict[str, Any]:
        mapping = self.split_by_mapping
        return {**super().split_settings(), "split_by_mapping": mapping and str(mapping)}

    def open_all(self, source: ImageSource, findings: list[Finding]) -> dict[int, tuple]:
        """(mode, (width, height) upright) of every sample that opens as an image and is
        not too large to decode; headers only."""
        headers = {}
        for i in range(len(source.ids)):
            try:
                with source.read(i) as image:
                    check_pixels(image.size, source.subject(i), self.max_pixels)
                    headers[i] = (image.mode, shown_size(image))
            except Exception as error:  # whatever fails to open is a finding, not a crash
                findings.append(unreadable(source.subject(i), error, self.rules))
        return headers

    def decode_all(
        self,
        source: ImageSource,
        indices: np.ndarray,
        channels: int,
        size: tuple[int, int],
        out: np.ndarray,
    ) -> tuple[list[int], list[tuple[int, Finding]]]:
        """Writes every sample that decodes and that no rule drops into the next row of
        ``out``; returns the sample index of each row written, and the findings by sample."""
        kept, findings = [], []
        for i in indices.tolist():
            subject = source.subject(i)
            try:
                with source.read(i) as image:
                    mode, decoded = image.mode, decode(image, subject, self.max_pixels)
                found = inspect(mode, decoded.size, subject, MODES[channels], size, self.rules)
                pixels = to_pixels(decoded, channels, size)
            except Exception as error:  # truncated files open, then fail to decode
                findings.append((i, unreadable(subject, error, self.rules)))
                continue
            findings += [(i, finding) for finding in found]
            if not any(f.action == "drop" for f in found):
                out[len(kept)] = pixels
                kept.append(i)
        return kept, findings

    def train_statistics(self, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prepared.datasets["train"].channel_statistics(chunk)

    def dataset(self, split: str, augment: bool = False) -> ImageTensorDataset:
        """One split's images; training augmentation only when ``augment`` asks for it."""
        data = self.prepared.datasets[split]
        return data if augment else ImageTensorDataset(data.images, data.labels, rows=data.rows)

    def input_pixels(self, image: Image.Image, subject: str) -> tuple[np.ndarray, tuple]:
        """A new image decoded and converted exactly as the training images were
        (``predict``, ``serve``), and its (width, height) upright, before resizing."""
        decoded = decode(image, subject, self.max_pixels)
        channels, size = self.state["channels"], tuple(self.state["image_size"])
        return to_pixels(decoded, channels, size), decoded.size

    def read_predict_inputs(self) -> tuple[Dataset, list[str]] | None:
        """Every image under ``predict_root``, converted as in training; bad files skipped."""
        if self.predict_root is None:
            return None
        source = image_sources.predict_folder(self.predict_root)
        arrays, ids = [], []
        for i, sample_id in enumerate(source.ids):
            try:
                with source.read(i) as image:
                    arrays.append(self.input_pixels(image, source.subject(i))[0])
            except InputError as error:  # names the file
                print(f"Skipped {error}")
                continue
            except Exception as error:
                print(f"Skipped {source.subject(i)}: {type(error).__name__}: {error}")
                continue
            ids.append(sample_id)
        return ImageTensorDataset(np.stack(arrays), torch.full((len(ids),), -1)), ids

    def held_out_inputs(self, count: int) -> list[tuple[str, bytes]]:
        """Up to ``count`` test images as ``serve`` takes them: (name, PNG file) pairs."""
        return png_files(self.dataset("test"), count)

    def validation_inputs(self, count: int) -> tuple[list[tuple[str, bytes]], np.ndarray]:
        """Up to ``count`` validation images as PNG files, and their class codes."""
        val = self.dataset("val")
        files = png_files(val, count)
        return files, val.labels[: len(files)].numpy()

    def raw_inputs(self) -> Any:
        from ..export_image import ImageExport  # the export's side, read when exporting

        return ImageExport(self.state)

    def convert_inputs(
        self, files: Sequence[tuple[str, bytes]]
    ) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """Uploaded files (name, content) as one batch, converted as ``predict`` converts
        files, and their drift features; an InputError names the first file that fails."""
        arrays, sizes = [], []
        for name, content in files:
            with open_image(io.BytesIO(content), name) as image:  # InputErrors name the file
                pixels, size = self.input_pixels(image, name)
            arrays.append(pixels)
            sizes.append(size)
        pixels = np.stack(arrays)
        return torch.from_numpy(pixels), image_features(pixels, sizes)

    def profile_figures(self) -> dict[str, Figure]:
        return {"samples": sample_grid(self.prepared.datasets["train"], self.class_names)}


def png_files(data: ImageTensorDataset, count: int) -> list[tuple[str, bytes]]:
    """The first ``count`` images of ``data`` as (name, PNG file) pairs."""
    pixels = data.pixels(range(min(count, len(data))))
    return [(f"{i:03d}.png", png_bytes(image)) for i, image in enumerate(pixels)]
