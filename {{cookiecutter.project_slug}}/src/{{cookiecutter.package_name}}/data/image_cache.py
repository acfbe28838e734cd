"""Images decoded once into a memory-mapped ``uint8`` array, and the dataset that serves it.

``<cache_dir>/<key>.npy`` holds the pixels, (rows, C, H, W), and ``<key>.json`` what decoding
found besides: the sample index of each row and the findings, so a reused cache reports what a
fresh decode would. The key hashes everything the pixels depend on (each file's name, size and
mtime, the image shape, the decoding rules, Pillow's version and ``FORMAT``), so a changed
input builds a new cache and a stale one is never read. Both files are written under temporary
names and renamed into place, the JSON last: a build cut short leaves no cache that looks done.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import PIL
import torch
from numpy.lib.format import open_memmap
from torch.utils.data import Dataset

from .augment import KeyedTransform
from .findings import Finding
from .image_sources import ImageSource
from .sampling import SampleKey

# Bump when decoding changes what a cached array would hold (2: 16-bit, EXIF; 3: torch resize)
FORMAT = 3
STALE_TEMP_S = 24 * 3600  # temp files this old are left by killed builds, not running ones

# Fills rows of the array it is given; returns the sample index of each row it filled, and the
# findings by sample index.
Decode = Callable[[np.ndarray], tuple[list[int], list[tuple[int, Finding]]]]


@dataclass
class Decoded:
    """Row ``r`` of ``pixels`` is sample ``kept[r]``; memory-mapped when it comes from a cache."""

    kept: list[int]
    pixels: np.ndarray
    findings: list[Finding]


class ImageTensorDataset(Dataset):
    """``uint8`` (C, H, W) images served as they are: the model's ``Standardize`` scales them.

    ``images`` may be a memory map of every decoded image; ``rows`` (default: all) are this
    dataset's rows of it, so a split copies only the batches it serves. ``transform``
    (augmentation) runs per sample on ``uint8`` tensors.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: torch.Tensor,
        transform=None,
        rows: np.ndarray | None = None,
    ) -> None:
        self.images, self.transform = images, transform
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.rows = np.arange(len(self.labels)) if rows is None else np.asarray(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def pixels(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Untransformed images of the samples ``indices``, (N, C, H, W), read into memory."""
        return self.images[self.rows[np.asarray(indices, dtype=np.int64)]]

    @property
    def takes_sample_keys(self) -> bool:
        """Whether training samples should come as SampleKeys, whose (seed, epoch, index)
        fix their augmentation's draws (see ``augment.KeyedTransform``)."""
        return isinstance(self.transform, KeyedTransform)

    def __getitem__(self, index: int | SampleKey) -> tuple[torch.Tensor, torch.Tensor]:
        key = index if isinstance(index, SampleKey) else None
        position = index.index if key is not None else index
        image = torch.from_numpy(self.pixels([position])[0])
        if self.transform is not None:
            image = self.transform(image) if key is None else self.transform(image, key)
        return image, self.labels[position]

    def __getitems__(self, indices: list) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch in one read (of ints or SampleKeys); DataLoader calls this with
        ``collate_fn=collate``."""
        if self.transform is not None:
            images, labels = zip(*(self[i] for i in indices), strict=True)
            return torch.stack(images), torch.stack(labels)
        return torch.from_numpy(self.pixels(indices)), self.labels[indices]

    def channel_statistics(self, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std in [0, 1], shaped (C, 1, 1).

        Integer sums over ``chunk`` images at a time (None: about 4M pixels): the images may
        be a memory map larger than RAM.
        """
        channels, height, width = self.images.shape[1:]
        chunk = chunk or max(1, 2**22 // (channels * height * width))
        sums, squares = 0, 0
        for start in range(0, len(self), chunk):
            pixels = torch.from_numpy(self.pixels(range(start, min(start + chunk, len(self)))))
            sums = sums + pixels.sum(dim=(0, 2, 3), dtype=torch.int64)
            squares = squares + pixels.int().square().sum(dim=(0, 2, 3), dtype=torch.int64)
        n = len(self) * height * width
        mean = sums.double() / n
        std = ((squares.double() - n * mean.square()) / (n - 1)).sqrt()
        return (mean / 255).float().view(-1, 1, 1), (std / 255).float().view(-1, 1, 1)

    @staticmethod
    def collate(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``__getitems__`` returns a batch already."""
        return batch

    def __getstate__(self) -> dict:
        """A memory map travels to worker processes as its file name, not as a copy."""
        state = self.__dict__.copy()
        if isinstance(self.images, np.memmap) and self.images.filename:
            state["images"] = Path(self.images.filename)
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["images"], Path):
            state["images"] = np.load(state["images"], mmap_mode="r")
        self.__dict__.update(state)


def decode_cached(
    cache_dir: Path | None,
    source: ImageSource,
    indices: Sequence[int],
    shape: tuple[int, int, int],
    rules: dict[str, str],
    decode: Decode,
) -> Decoded:
    """The decoded samples ``indices`` of ``source``, from the cache when it holds them."""
    rows = (len(indices), *shape)
    if cache_dir is None or source.files is None:
        pixels = np.empty(rows, dtype=np.uint8)
        kept, findings = decode(pixels)
        return Decoded(kept, pixels[: len(kept)], [finding for _, finding in findings])
    path = Path(cache_dir) / f"{cache_key(source, indices, shape, rules)}.npy"
    cached = load(path, source, rows)
    if cached is not None:
        print(f"Image cache: {path} ({megabytes(path)}), reused")
        return cached
    start = time.perf_counter()
    build(path, rows, decode)
    cached = load(path, source, rows)
    if cached is None:
        raise OSError(f"The image cache {path} was written but does not read back.")
    took = time.perf_counter() - start
    print(
        f"Image cache: decoded {len(cached.kept)} images in {took:.1f} s "
        f"into {path} ({megabytes(path)})"
    )
    return cached


def cache_key(
    source: ImageSource, indices: Sequence[int], shape: tuple[int, ...], rules: dict[str, str]
) -> str:
    """SHA-256 of what the pixels depend on; the file stats stand in for their contents."""
    stats = [[name, *file_stat(path)] for name, path in sorted(source.files.items())]
    inputs = {
        "format": FORMAT,
        "pillow": PIL.__version__,
        "files": stats,
        "ids": source.ids,
        "indices": [int(i) for i in indices],
        "shape": list(shape),
        "rules": rules,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def file_stat(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def load(path: Path, source: ImageSource, rows: tuple[int, ...]) -> Decoded | None:
    """The cache at ``path``, or None when it is missing, unreadable or not what was asked."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        pixels = np.load(path, mmap_mode="r")
        kept = [int(i) for i in meta["kept"]]
        findings = [
            Finding(**{**entry, "subject": source.subject(entry["subject"])})
            for entry in meta["findings"]
        ]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    if meta.get("format") != FORMAT or pixels.shape != rows or pixels.dtype != np.uint8:
        return None
    return Decoded(kept, pixels[: len(kept)], findings)


def build(path: Path, rows: tuple[int, ...], decode: Decode) -> None:
    """Decodes into a temporary memory map beside ``path``, then renames both files into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path.parent)
    temp = path.with_name(f"{path.stem}.{os.getpid()}.{time.time_ns()}.tmp")
    try:
        pixels = open_memmap(temp, mode="w+", dtype=np.uint8, shape=rows)
        kept, findings = decode(pixels)
        pixels.flush()
        del pixels
        os.replace(temp, path)
        # Findings name their sample by index: a path would go stale when the data moves.
        entries = [{**asdict(finding), "subject": index} for index, finding in findings]
        temp.write_text(json.dumps({"format": FORMAT, "kept": kept, "findings": entries}))
        os.replace(temp, path.with_suffix(".json"))
    finally:
        temp.unlink(missing_ok=True)


def sweep_stale_temps(folder: Path) -> None:
    """Removes what builds killed long ago left; a running build's temp file is recent."""
    now = time.time()
    for temp in folder.glob("*.tmp"):
        try:
            if now - temp.stat().st_mtime > STALE_TEMP_S:
                temp.unlink()
        except OSError:
            continue


def megabytes(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"
