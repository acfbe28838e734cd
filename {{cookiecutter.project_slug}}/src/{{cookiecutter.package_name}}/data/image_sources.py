"""Where images come from: the embedded digits, a folder, a torchvision dataset, new inputs.

A source lists samples (id, label, given split) and opens one on request; it knows
nothing about checks. ``image_decoding`` decodes what it opens, for training data and for
new inputs alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from .image_decoding import open_image

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}  # image_decoding.FORMATS
GIVEN_SPLITS = ("train", "val", "test")  # DIR/<split>/<class>/* uses the splits as given
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


@dataclass
class ImageSource:
    """Samples of one source. ``splits[i]`` is None where the seed decides the split."""

    root: Path | None  # where file ids are relative to; None for in-memory sources
    ids: list[str]
    labels: list[str]
    splits: list[str | None]
    read: Callable[[int], Image.Image]  # opens sample i; InputError for a file that isn't one
    # The files the pixels come from, by a name that survives moving the data; their sizes
    # and times key the decode cache. None: in memory, not worth caching.
    files: dict[str, Path] | None = None

    def subject(self, index: int) -> str:
        """How a finding names the sample: its full path, or its id in memory."""
        return str(self.root / self.ids[index]) if self.root else self.ids[index]


def fitted_channels(modes: Iterable[str]) -> int:
    """1 when most training images are greyscale, else 3 (RGB)."""
    grey = Counter(mode in GREY_MODES for mode in modes)
    return 1 if grey[True] > grey[False] else 3


def digits() -> ImageSource:
    """scikit-learn's 1,797 handwritten 8x8 digits: bundled with the package, no download."""
    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)  # 17 grey levels -> 0..255
    n = len(images)
    return ImageSource(
        None,
        [f"digits/{i}" for i in range(n)],
        [str(label) for label in bunch.target],
        [None] * n,
        lambda i: Image.fromarray(images[i], mode="L"),
    )


def image_files(directory: Path) -> list[Path]:
    """Every file under ``directory`` with an image suffix, in a stable order."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def open_path(paths: list[Path], index: int) -> Image.Image:
    """Opens (reads the header of) one file; ``image_decoding.decode`` decodes the pixels."""
    return open_image(paths[index], str(paths[index]))


def folder(root: Path) -> ImageSource:
    """``root/<class>/*``, or ``root/{train,val,test}/<class>/*`` with the splits as given.

    Without a ``val`` folder the seed carves validation images out of ``train``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {root} is not a directory of images.")
    given = (root / "train").is_dir()
    paths, labels, splits = [], [], []
    for split in GIVEN_SPLITS if given else (None,):
        base = root / split if split else root
        if not base.is_dir():
            continue
        for class_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            for path in image_files(class_dir):
                paths.append(path)
                labels.append(class_dir.name)
                pooled = split == "train" and not (root / "val").is_dir()
                splits.append(None if pooled else split)
    if not paths:
        layout = "DIR/<class>/*.png or DIR/{train,val,test}/<class>/*.png"
        raise FileNotFoundError(
            f"No image files ({', '.join(sorted(SUFFIXES))}) in {root}: {layout}"
        )
    ids = [path.relative_to(root).as_posix() for path in paths]
    files = dict(zip(ids, paths, strict=True))
    return ImageSource(root, ids, labels, splits, partial(open_path, paths), files)


def torchvision_dataset(name: str, root: Path, download: bool) -> ImageSource:
    """A torchvision dataset with ``train``/``test`` parts (MNIST, FashionMNIST, CIFAR10 ...).

    Downloads into ``root`` on first use; the test part is the test split, and the seed
    carves validation images out of the training part.
    """
    from torchvision import datasets  # imported here: only this source needs it

    if not hasattr(datasets, name):
        raise ValueError(f"torchvision.datasets has no dataset {name!r} (e.g. MNIST, CIFAR10).")
    parts = {
        split: getattr(datasets, name)(str(root), train=split == "train", download=download)
        for split in ("train", "test")
    }
    ids, labels, splits, index, files = [], [], [], [], {}
    for split, dataset in parts.items():
        files |= dataset_files(dataset, root)
        classes = dataset.classes
        for i, target in enumerate(dataset.targets):
            ids.append(f"{name}/{split}/{i}")
            labels.append(str(classes[int(target)]))
            splits.append(None if split == "train" else "test")
            index.append((dataset, i))
    return ImageSource(None, ids, labels, splits, lambda i: index[i][0][index[i][1]][0], files)


def dataset_files(dataset, root: Path) -> dict[str, Path]:
    """The files a torchvision dataset reads: MNIST's ``raw_folder``, CIFAR's ``base_folder``."""
    folder = Path(getattr(dataset, "raw_folder", root / getattr(dataset, "base_folder", "")))
    return {p.relative_to(root).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def predict_folder(root: Path) -> ImageSource:
    """Every image file under ``root`` (no class folders needed): inputs for ``predict``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.predict_root {root} is not a directory.")
    paths = image_files(root)
    if not paths:
        raise FileNotFoundError(f"No image files ({', '.join(sorted(SUFFIXES))}) under {root}.")
    ids = [path.relative_to(root).as_posix() for path in paths]
    return ImageSource(
        root, ids, [""] * len(ids), ["predict"] * len(ids), partial(open_path, paths)
    )
