"""Which sample went to which split, and a fingerprint of the data a run used."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path


def fingerprint(ids: Sequence[str], hashes: Sequence[str], labels: Sequence[str]) -> str:
    """SHA-256 over every sample's id, content hash and label, independent of their order."""
    lines = sorted(f"{i}\t{h}\t{y}" for i, h, y in zip(ids, hashes, labels, strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def save_manifest(
    run_dir: Path,
    ids: Sequence[str],
    labels: Sequence[str],
    splits: Sequence[str],
    digest: str,
    groups: Sequence[str] | None = None,
) -> None:
    """``split_manifest.csv`` (id, label, split, and the group the split kept whole when
    ``groups`` are given) and ``data_fingerprint.json`` in ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    columns = [ids, labels, splits] if groups is None else [ids, labels, splits, groups]
    with (run_dir / "split_manifest.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "label", "split", "group"][: len(columns)])
        writer.writerows(zip(*columns, strict=True))
    counts = Counter(splits)
    summary = {"fingerprint": digest, "samples": {s: counts[s] for s in ("train", "val", "test")}}
    (run_dir / "data_fingerprint.json").write_text(json.dumps(summary, indent=2) + "\n")
