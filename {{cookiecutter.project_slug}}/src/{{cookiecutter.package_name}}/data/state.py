"""The split a checkpoint was trained on, and the check that later commands read that split.

Every data module's state (see ``base.CheckedDataModule.state``) carries a split record: the
settings that decide the split, the data's fingerprint, and a digest of which sample went to
which split. ``validate``, ``test`` and a resumed ``fit`` compare the split they read with it:
the same digest is the same split, whatever else changed; another digest is refused, because
its validation and test samples would include samples the model was trained on.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .findings import DataError

# The layout of a data module's state; 1 (unnumbered) had no split record.
STATE_VERSION = 2
# How the command line names each split setting (data modules take them as init_args).
OPTION_NAMES = {"seed": "seed_everything"}


def manifest_digest(ids: Sequence[str], splits: Sequence[str]) -> str:
    """SHA-256 over every sample's id and split, independent of their order."""
    lines = sorted(f"{i}\t{s}" for i, s in zip(ids, splits, strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def split_record(
    settings: Mapping[str, Any], ids: Sequence[str], splits: Sequence[str], fingerprint: str
) -> dict[str, Any]:
    """What identifies a split: its settings, the data's fingerprint, the manifest's digest."""
    counts = Counter(splits)
    return {
        "settings": dict(settings),
        "fingerprint": fingerprint,
        "manifest": manifest_digest(ids, splits),
        "samples": {s: counts[s] for s in ("train", "val", "test")},
    }


def check_split(saved: Mapping[str, Any], current: Mapping[str, Any], source: str) -> None:
    """Refuse a split other than the checkpoint's (``saved``), naming what changed."""
    record = saved.get("split")
    if record is None:
        warnings.warn(
            f"{source} records no split (saved before split records were): this command "
            "can't check that it evaluates on the samples the model was not trained on.",
            stacklevel=2,
        )
        return
    if record["manifest"] == current["manifest"]:
        return
    raise DataError(
        f"{source} was trained on another split than this command reads: "
        f"{'; '.join(changes(record, current))}. Its validation and test samples would include "
        "training samples. Run with the run's own config (--config runs/<run>/config.yaml, "
        "without overriding the split settings), or use `predict` for new inputs."
    )


def changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The settings and data that differ between two split records, as a person reads them."""
    before, after = saved["settings"], current["settings"]
    named = [
        f"{OPTION_NAMES.get(key, f'data.init_args.{key}')} {before.get(key)} -> {after.get(key)}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]
    if saved["fingerprint"] != current["fingerprint"]:
        named.append(
            f"the data changed (fingerprint {saved['fingerprint'][:12]} -> "
            f"{current['fingerprint'][:12]}, samples {saved['samples']} -> {current['samples']})"
        )
    return named or ["the same settings and data gave another split (a library changed?)"]
