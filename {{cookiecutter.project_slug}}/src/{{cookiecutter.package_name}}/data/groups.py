"""Groups of samples whose test metrics are compared: a column of the table, or a mapping
from image ids to groups. A model can score well overall and badly on one group."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .findings import DataError

UNMAPPED = "(unmapped)"


def read_group_mapping(path: Path, option: str = "group_mapping") -> dict[str, str]:
    """``id,group`` rows of a CSV file; ids as in the run's ``split_manifest.csv``."""
    if not Path(path).is_file():
        raise DataError(f"{option} {path}: no such file (a CSV with columns id,group)")
    with Path(path).open(newline="") as file:
        reader = csv.DictReader(file)
        absent = [name for name in ("id", "group") if name not in (reader.fieldnames or [])]
        if absent:
            raise DataError(
                f"{path}: no column {absent[0]!r} (columns are {reader.fieldnames}); a group "
                "mapping has an `id` column (as in split_manifest.csv) and a `group` column."
            )
        mapping: dict[str, str] = {}
        for row in reader:
            if row["id"] in mapping:
                raise DataError(f"{path}: id {row['id']!r} is mapped twice")
            mapping[row["id"]] = row["group"]
    return mapping


def groups_of(
    ids: Sequence[str], mapping: dict[str, str], path: Path, option: str = "group_mapping"
) -> list[str]:
    """Each sample's group; samples the mapping misses form the group ``(unmapped)``."""
    groups = [mapping.get(sample, UNMAPPED) for sample in ids]
    if all(group == UNMAPPED for group in groups):
        raise DataError(
            f"{option} {path}: none of its ids is a sample of this data; ids look like "
            f"{list(ids[:3])} (see split_manifest.csv)."
        )
    return groups


class WithGroups(Dataset):
    """A dataset whose samples carry their group's code as a third element: ``(x, y, g)``."""

    def __init__(self, dataset: Dataset, codes: torch.Tensor) -> None:
        self.dataset, self.codes = dataset, codes

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return (*self.dataset[index], self.codes[index])

    def __getitems__(self, indices: list[int]) -> Any:
        """Whole batches from datasets that fetch them (images), else one sample at a time."""
        if hasattr(self.dataset, "__getitems__"):
            return (*self.dataset.__getitems__(indices), self.codes[indices])
        return [self[i] for i in indices]
