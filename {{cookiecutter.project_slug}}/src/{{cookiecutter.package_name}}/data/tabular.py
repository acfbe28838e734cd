"""Tabular classification data: a CSV/Parquet file, or scikit-learn's breast-cancer table."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_breast_cancer
from torch.utils.data import DataLoader, TensorDataset

from .loading import loader_kwargs
from .split import SPLITS, Split, stratified_split


def read_table(path: Path | None, target: str) -> tuple[pd.DataFrame, pd.Series]:
    """Features and labels from ``path``; the embedded breast-cancer table when ``path`` is None.

    Raises ``ValueError`` naming the offending columns when the table can't be trained on
    as it is: a missing target, non-numeric features, or missing values.
    """
    if path is None:
        bunch = load_breast_cancer(as_frame=True)
        labels = bunch.target.map(dict(enumerate(bunch.target_names)))
        return bunch.data, labels.rename(target)
    table = pd.read_parquet(path) if Path(path).suffix == ".parquet" else pd.read_csv(path)
    if target not in table.columns:
        raise ValueError(
            f"{path}: no target column {target!r}; columns are {list(table.columns)}. "
            "Set data.init_args.target to the label column."
        )
    features = table.drop(columns=[target])
    non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise ValueError(f"{path}: non-numeric feature columns {non_numeric}; encode or drop them.")
    missing = [c for c in table.columns if table[c].isna().any()]
    if missing:
        raise ValueError(f"{path}: missing values in columns {missing}; impute or drop them.")
    return features, table[target]


class TabularDataModule(L.LightningDataModule):
    """Rows split by a seed into stratified train/val/test sets.

    Features stay raw here; the model standardises them with statistics from
    :meth:`train_statistics`, so that serving sees the same preprocessing.
    """

    def __init__(
        self,
        path: Path | None = None,
        target: str = "target",
        seed: int = 42,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        batch_size: int = 32,
        num_workers: int = 0,  # 0 loads in the main process: in-memory tensors need no workers
        pin_memory: bool | None = None,  # None: pin when CUDA is available
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
    ) -> None:
        """
        Args:
            path: CSV or Parquet file; None uses the embedded breast-cancer table.
            target: Label column.
            seed: Fixes the split; LightningCLI links it to ``seed_everything``.
            val_fraction: Share of all rows held out for validation.
            test_fraction: Share of all rows held out for the final test.
            batch_size: Rows per batch (per device under DDP).
            num_workers: Loader worker processes.
            pin_memory: Page-locked host memory for faster host-to-GPU copies.
            persistent_workers: Keep workers alive between epochs.
            prefetch_factor: Batches each worker loads ahead.
        """
        super().__init__()
        self.path, self.target = path, target
        self.seed, self.val_fraction, self.test_fraction = seed, val_fraction, test_fraction
        self.loader_kwargs = loader_kwargs(
            batch_size, num_workers, pin_memory, persistent_workers, prefetch_factor
        )

    @cached_property
    def _table(self) -> tuple[torch.Tensor, np.ndarray, list[str], list[str]]:
        features, labels = read_table(self.path, self.target)
        codes, class_names = pd.factorize(labels, sort=True)
        x = torch.tensor(features.to_numpy(dtype=np.float32))
        return x, codes, [str(c) for c in class_names], list(features.columns)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_names(self) -> list[str]:
        return self._table[2]

    @property
    def feature_names(self) -> list[str]:
        return self._table[3]

    @property
    def input_shape(self) -> list[int]:
        return [self._table[0].shape[1]]

    @cached_property
    def split_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train, val, test) row indices: a function of the seed and fractions only."""
        return stratified_split(self._table[1], self.val_fraction, self.test_fraction, self.seed)

    def train_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature mean and std of the training rows."""
        train = self._table[0][self.split_indices[0]]
        return train.mean(dim=0), train.std(dim=0)

    def dataset(self, split: Split) -> TensorDataset:
        x, codes = self._table[:2]
        indices = self.split_indices[SPLITS.index(split)]
        return TensorDataset(x[indices], torch.as_tensor(codes[indices], dtype=torch.long))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("train"), shuffle=True, **self.loader_kwargs)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), **self.loader_kwargs)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("test"), **self.loader_kwargs)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
