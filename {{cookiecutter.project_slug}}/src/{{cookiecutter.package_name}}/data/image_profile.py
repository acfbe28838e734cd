"""What the image data looks like, for people and for the drift monitor: per-image features
(channel means and spreads, original sizes), their training profile, and a grid of samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .. import reports
from .drift import fit_profile
from .image_cache import ImageTensorDataset

CHANNEL_NAMES = {1: ["grey"], 3: ["red", "green", "blue"]}


def image_features(pixels: np.ndarray, sizes: Sequence[tuple[int, int]]) -> dict[str, np.ndarray]:
    """What the drift monitor watches: each channel's mean and standard deviation of the
    ``uint8`` (N, C, H, W) ``pixels`` as the model gets them, and the (width, height)
    ``sizes`` of the images as they came, before resizing."""
    flat = pixels.reshape(len(pixels), pixels.shape[1], -1).astype(np.float32)
    means, stds = flat.mean(axis=2), flat.std(axis=2)
    features = {}
    for c, channel in enumerate(CHANNEL_NAMES[pixels.shape[1]]):
        features[f"{channel} mean"], features[f"{channel} std"] = means[:, c], stds[:, c]
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    return features | {"width": sizes[:, 0], "height": sizes[:, 1]}


def drift_profile(
    pixels: np.ndarray, rows: np.ndarray, sizes: list[tuple[int, int]], chunk: int = 4096
) -> dict[str, Any]:
    """The training profile of ``image_features`` over the decoded images ``rows``, ``chunk``
    at a time (``pixels`` may be a memory map larger than RAM); ``sizes``: each decoded
    image's size in its file."""
    parts = []
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        parts.append(image_features(pixels[part], [sizes[i] for i in part]))
    return fit_profile({name: np.concatenate([p[name] for p in parts]) for name in parts[0]})


def sample_grid(
    dataset: ImageTensorDataset, class_names: Sequence[str], per_class: int = 8
) -> Figure:
    """The first ``per_class`` images of each class, untransformed: one row per class."""
    images, labels = [], []
    for row, name in enumerate(class_names):
        chosen = dataset.pixels((dataset.labels == row).nonzero().flatten()[:per_class].numpy())
        images += list(chosen)
        labels += [(name, "black")] * len(chosen)
    return reports.labelled_mosaic(
        np.stack(images), labels, per_class, "Training samples per class"
    )
