"""Checks of images: files that won't decode, odd modes and sizes, near-duplicates.

Plain functions from decoded images to findings; ``ImageRules`` says what ``fit`` does
about each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import imagehash
import numpy as np
from PIL import Image

from .base import InputError
from .checks import CommonRules
from .findings import Finding

# Perceptual hashes of tiny images say little: at Hamming distance <= 4, 75-83 % of the
# 8x8 digits count as near-duplicates of one another. Below this side length no hashing.
MIN_HASHED_SIDE = 32
SAME_PICTURE = 0.99  # pixel correlation that confirms a hash match (see same_picture)
WITHIN_SAMPLE = 2000  # training images searched for the data's own near-duplicate rate
# Greyscale at more bits a pixel has the channels of greyscale: not a channel mismatch.
SAME_CHANNELS = {"I;16": "L", "I;16B": "L", "I;16L": "L", "I;16N": "L"}
# A 64-bit hash per image; popcount of 16-bit pieces through a table (numpy < 2 has no popcount).
POPCOUNT16 = np.array([bin(i).count("1") for i in range(1 << 16)], dtype=np.uint8)


@dataclass
class ImageRules(CommonRules):
    """What ``fit`` does about each check's findings; ``fail`` stops before the first step.

    Args:
        unreadable_image: ``drop`` a file that won't decode (listed by path), or ``fail``.
        channel_mismatch: ``convert`` to the dataset's channels, ``drop``, or ``fail``.
        size_mismatch: ``convert`` (resize to image_size), ``drop``, or ``fail``.
        near_duplicate_across_splits: ``keep`` (a warning), ``drop`` the val/test image, or
            ``fail``.
    """

    unreadable_image: Literal["drop", "fail"] = "drop"
    channel_mismatch: Literal["convert", "drop", "fail"] = "convert"
    size_mismatch: Literal["convert", "drop", "fail"] = "convert"
    near_duplicate_across_splits: Literal["keep", "drop", "fail"] = "keep"


def unreadable(subject: str, error: Exception, rules: ImageRules) -> Finding:
    if isinstance(error, InputError):  # the decoder's own words, after the file's name
        message = str(error).removeprefix(f"{subject}: ")
    else:
        message = f"does not decode as an image ({type(error).__name__}: {error})"
    return Finding("unreadable_image", "warning", subject, message, rules.unreadable_image)


def inspect(
    found: str,
    shown: tuple[int, int],
    subject: str,
    mode: str,
    size: tuple[int, int],
    rules: ImageRules,
) -> list[Finding]:
    """Findings about one image, of mode ``found`` and (width, height) ``shown`` upright,
    against the dataset's mode and (height, width)."""
    findings = []
    if SAME_CHANNELS.get(found, found) != mode:
        kind = {"L": "greyscale", "LA": "greyscale+alpha", "RGBA": "RGBA", "P": "palette"}
        message = f"{kind.get(found, found)} ({found}) image among {mode} images"
        findings.append(
            Finding("channel_mismatch", "warning", subject, message, rules.channel_mismatch)
        )
    height, width = size
    if shown != (width, height):
        message = f"{shown[1]}x{shown[0]} pixels, the dataset is {height}x{width}"
        findings.append(Finding("size_mismatch", "warning", subject, message, rules.size_mismatch))
    return findings


def perceptual_hash(pixels: np.ndarray) -> int:
    """64-bit DCT hash (``imagehash.phash``) of (C, H, W) ``uint8`` pixels."""
    image = Image.fromarray(pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0))
    return int(str(imagehash.phash(image)), 16)


def hamming(hashes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Pairwise bit differences, shape (len(hashes), len(others))."""
    pieces = (hashes[:, None] ^ others[None, :]).view(np.uint16).reshape(len(hashes), -1, 4)
    return POPCOUNT16[pieces].sum(axis=2, dtype=np.int32)


def near_duplicates(
    ids: Sequence[str],
    pixels: np.ndarray,
    splits: Sequence[str],
    smallest_side: int,
    max_distance: int,
    action: str,
) -> list[Finding]:
    """Validation/test images within ``max_distance`` bits of a training image's perceptual
    hash and confirmed at pixel level (see :func:`same_picture`), and one info line with
    their share beside the share of training images that have one within training.
    ``smallest_side`` of the files and of ``pixels`` decides whether hashes mean much."""
    if smallest_side < MIN_HASHED_SIDE:
        message = f"skipped: images under {MIN_HASHED_SIDE} px are too small to hash"
        return [Finding("near_duplicate_across_splits", "info", "dataset", message)]
    splits = np.asarray(splits)
    values = np.asarray([perceptual_hash(array) for array in pixels], dtype=np.uint64)
    train = np.flatnonzero(splits == "train")
    held_out = np.flatnonzero(splits != "train")
    findings = []
    for index, nearest, bits in confirmed_pairs(pixels, values, held_out, train, max_distance):
        message = (
            f"{splits[index]} image looks like training image {ids[nearest]} (perceptual "
            f"hash {bits} bits apart, pixels correlated above {SAME_PICTURE})"
        )
        findings.append(
            Finding("near_duplicate_across_splits", "warning", ids[index], message, action)
        )
    if findings:
        sample = train[:WITHIN_SAMPLE]
        within = {i for i, _, _ in confirmed_pairs(pixels, values, sample, sample, max_distance)}
        message = (
            f"{len(findings)} of {len(held_out)} validation/test images "
            f"({len(findings) / len(held_out):.1%}) have a near-duplicate in training; "
            f"within training {len(within) / len(sample):.1%} of the images have one (the "
            "data's own rate: bursts or frames of one scene, if it is high)"
        )
        findings.append(Finding("near_duplicate_across_splits", "info", "dataset", message))
    return findings


def confirmed_pairs(
    pixels: np.ndarray, hashes: np.ndarray, queries: np.ndarray, pool: np.ndarray, bits: int
) -> list[tuple[int, int, int]]:
    """(query, nearest other image of ``pool``, hash distance) for each query whose nearest
    hash is within ``bits`` and whose pixels confirm it."""
    pairs = []
    for start in range(0, len(queries), 256):  # bounded memory: 256 x len(pool) distances
        chunk = queries[start : start + 256]
        distances = hamming(hashes[chunk], hashes[pool])
        distances[pool[None, :] == chunk[:, None]] = 64 + 1  # not itself
        for row, index in enumerate(chunk):
            nearest = int(distances[row].argmin()) if len(pool) else -1
            if nearest < 0 or distances[row, nearest] > bits:
                continue
            if same_picture(pixels[index], pixels[pool[nearest]]):
                pairs.append((int(index), int(pool[nearest]), int(distances[row, nearest])))
    return pairs


def same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """Two (C, H, W) images correlate above ``SAME_PICTURE`` as 16x16 greyscale, each less
    its mean: an edited copy (brightness, recompression, resizing, noise: >= 0.998 measured)
    but not two distinct low-detail images a hash can't tell apart (real handwritten
    digits upscaled to 32 px: 0.94-0.98)."""

    def signature(pixels: np.ndarray) -> np.ndarray:
        grey = Image.fromarray(pixels.mean(axis=0).astype(np.uint8))
        small = np.asarray(grey.resize((16, 16), Image.Resampling.BOX), dtype=np.float64)
        small -= small.mean()
        return small / (np.linalg.norm(small) or 1.0)

    return float((signature(a) * signature(b)).sum()) >= SAME_PICTURE
