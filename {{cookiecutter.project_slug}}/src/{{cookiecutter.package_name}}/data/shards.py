"""LitData shards of the checked image data, written once, in a folder or object storage.

``write_shards`` runs the checks, the split and the statistics of ``ImageDataModule`` once and
writes ``<out>/{train,val,test}`` (``uint8`` pixels, label, position in the split, sample id)
and, last, ``<out>/meta.json``, whose presence means the shards are complete.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from .findings import DataError, raise_on_failures
from .image import ImageDataModule
from .loading import available_cpus
from .split import SPLITS

PACKAGE = __name__.split(".")[0]
FORMAT = "image-shards/1"  # meta.json's mark: written by write_shards, in this layout
SAMPLES_PER_WRITER = 50_000  # below this, another optimize process costs more than it saves
# Training leaves out the tail of the last chunk LitData deals (whole batches per rank): with
# one chunk, the same samples every epoch; with many, whose order is shuffled, others each time.
MIN_CHUNKS = 16


def require_litdata():
    """The ``litdata`` module, or an ImportError that says how to install it."""
    try:
        import litdata
    except ImportError as missing:
        raise ImportError(
            "Streaming shards need LitData, an optional extra: pip install -e '.[streaming]'"
        ) from missing
    return litdata


def storage(url: str):
    """LitData's client for object storage, with the credentials its readers use."""
    return require_litdata().streaming.fs_provider._get_fs_provider(url)


def exists(path: str) -> bool:
    return Path(path).is_file() if "://" not in path else storage(path).exists(path)


def read_text(path: str) -> str | None:
    """A small file from a folder or object storage; None when there is none."""
    if not exists(path):
        return None
    if "://" not in path:
        return Path(path).read_text()
    with tempfile.TemporaryDirectory() as tmp:
        storage(path).download_file(path, f"{tmp}/file")
        return Path(f"{tmp}/file").read_text()


def write_text(path: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(path) if "://" not in path else Path(tmp) / "file"
        local.write_text(text)
        if "://" in path:
            storage(path).upload_file(str(local), path)


class SplitRows:
    """``optimize``'s function: position ``i`` of one split's dataset as a sample."""

    def __init__(self, dataset: Dataset, ids: list[str]) -> None:
        self.dataset, self.ids = dataset, ids

    def __call__(self, i: int) -> dict[str, Any]:
        image = self.dataset.pixels([i])[0]  # (C, H, W) uint8
        return {"image": image, "label": int(self.dataset.labels[i]), "index": i, "id": self.ids[i]}


def chunk_size(samples: int, sample_bytes: int, chunk_bytes: str) -> int:
    """Samples a chunk: ``chunk_bytes`` of them ("64MB", "500kB"), split in MIN_CHUNKS or more."""
    size = re.fullmatch(r"([\d.]+)\s*([kmgt]?)i?b?", chunk_bytes.strip().lower())
    if size is None:
        raise ValueError(f"--chunk_bytes {chunk_bytes!r}: give a size such as 64MB or 500kB")
    limit = float(size[1]) * 1000 ** ("kmgt".index(size[2]) + 1 if size[2] else 0)
    return max(1, min(int(limit // sample_bytes), math.ceil(samples / MIN_CHUNKS)))


def write_shards(datamodule: ImageDataModule, output_dir: str, chunk_bytes: str = "64MB") -> dict:
    """Shards of the checked, split data of ``datamodule`` in ``output_dir``; returns meta.json.

    Each split is written in an order shuffled by the seed: LitData shuffles the chunks and
    256-sample blocks within them, so a folder written class by class would give one-class
    batches.
    """
    if not isinstance(datamodule, ImageDataModule):
        raise ValueError(f"shard reads ImageDataModule's data, not {type(datamodule).__name__}'s")
    litdata = require_litdata()
    output_dir = output_dir.rstrip("/")
    if exists(f"{output_dir}/meta.json"):
        raise FileExistsError(f"{output_dir} holds shards already: choose another --output_dir.")
    data = datamodule.prepared
    raise_on_failures(data.findings, type(datamodule))
    if datamodule.state.get("balanced_sampler"):
        raise DataError(
            "The class_imbalance rule 'sampler' draws samples by weight, which streaming in "
            "chunk order can't: use --data.init_args.rules.class_imbalance class_weights."
        )
    mean, std = datamodule.train_statistics()
    counts = {}
    for split in SPLITS:
        ids = [i for i, s in zip(data.ids, data.splits, strict=True) if s == split]
        counts[split] = len(ids)
        if not ids:  # no folder: the module names the missing split if it is needed
            continue
        litdata.optimize(
            SplitRows(datamodule.dataset(split), ids),
            np.random.default_rng(datamodule.seed).permutation(len(ids)).tolist(),
            output_dir=f"{output_dir}/{split}", verbose=False,
            chunk_size=chunk_size(len(ids), math.prod(datamodule.input_shape), chunk_bytes),
            num_workers=max(1, min(available_cpus(), len(ids) // SAMPLES_PER_WRITER)),
            # Linux: workers inherit the decoded images instead of importing torch and reading
            # them again, seconds a split; elsewhere LitData's default (spawn).
            start_method="fork" if sys.platform == "linux" else None, reorder_files=False,
        )  # fmt: skip
    meta = {
        "format": FORMAT,
        "source": datamodule.describe_source(),
        "seed": datamodule.seed,
        "fingerprint": data.fingerprint,
        "counts": counts,
        "class_names": datamodule.class_names,
        "input_shape": datamodule.input_shape,
        "train_mean": mean.flatten().tolist(),
        "train_std": std.flatten().tolist(),
        "photos": datamodule.shows_photos(),  # the default of horizontal_flip
        "state": datamodule.state,  # all it fitted: class weights, drift profile, ...
    }
    write_text(f"{output_dir}/meta.json", json.dumps(meta, indent=2) + "\n")
    print(f"Shards: {output_dir} ({', '.join(f'{s} {n}' for s, n in counts.items())})")
    return meta
