"""Seeded, stratified train/val/test splits."""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.model_selection import train_test_split

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")  # the order of split_indices


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return disjoint (train, val, test) index arrays with the class balance of ``labels``.

    The test split is cut first so that changing ``val_fraction`` never moves a sample
    into or out of the test set.
    """
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must each lie "
            "in (0, 1) and leave room for training data"
        )
    indices = np.arange(len(labels))
    rest, test = train_test_split(
        indices, test_size=test_fraction, stratify=labels, random_state=seed
    )
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1 - test_fraction),
        stratify=labels[rest],
        random_state=seed,
    )
    return np.sort(train), np.sort(val), np.sort(test)
