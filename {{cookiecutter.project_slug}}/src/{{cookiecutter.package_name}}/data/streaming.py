"""Image data that outgrows one disk: ``StreamingImageDataModule`` trains from the shards
``shards.write_shards`` wrote, in a folder or object storage (``s3://…``), with what
``ImageDataModule`` fitted.

Three LitData 0.2.76 defaults are changed in ``StreamingImageDataModule.dataset``, each where
it is done, with the LitData source that shows why.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset

from .augment import training_augmentation
from .base import DeviceBatches, FittedState
from .findings import DataError
from .loading import BatchSize, LoaderSettings, Workers, resolve_loader
from .shards import FORMAT, PACKAGE, exists, read_text, require_litdata

if TYPE_CHECKING:
    from litdata import StreamingDataLoader, StreamingDataset


def evaluation_batch_size(samples: int, ranks: int, batch_size: int) -> int:
    """The largest batch up to ``batch_size`` that gives every rank as many whole batches.

    LitData deals whole batches to the ranks and the rest to the last one: at the full batch
    size, a split under ranks x batch_size would leave ranks without a batch, and their
    missing validation would stall the others.
    """
    return max(1, samples // (ranks * math.ceil(samples / (ranks * batch_size))))


class ToTensors:
    """A stored sample as ``(image, label)`` tensors; ``transform`` augments the image."""

    def __init__(self, transform=None) -> None:
        self.transform = transform

    def __call__(self, sample: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.array(sample["image"]))  # a copy: the chunk is read-only
        if self.transform is not None:
            image = self.transform(image)
        return image, torch.tensor(sample["label"])


def sample_id(sample: dict[str, Any]) -> str:
    """A stored sample as its id (``fields`` of ``StreamingImageDataModule.loader``)."""
    return sample["id"]


class Positions(Dataset):
    """A split read by position, as code written for the in-memory modules reads it."""

    def __init__(self, dataset: StreamingDataset, length: int) -> None:
        self.dataset, self.length = dataset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset[i]


class StreamingImageDataModule(FittedState, DeviceBatches, L.LightningDataModule):
    """Trains from the shards ``write_shards`` wrote, with the class names, input shape and
    statistics fitted then. Under DDP each rank and loader worker streams its own share: no
    sample twice an epoch, and every rank takes as many training steps.

    Batches are ``(uint8 images, labels)``. Checkpoints hold the loaders' position, so a run
    stopped mid-epoch resumes at the next batch.
    """

    device_speedups = ("augment on the device: --data.augment_on_device true",)

    def __init__(
        self,
        input_dir: str,
        batch_size: BatchSize = 64,
        shuffle: bool = True,
        seed: int = 42,
        augment: bool = True,
        augment_on_device: bool = False,
        rotation_degrees: float = 10.0,
        translate: float = 0.1,
        crop_padding: int = 0,
        horizontal_flip: bool | None = None,
        num_workers: Workers = "auto",
        pin_memory: bool | None = None,
        cache_dir: str | None = None,
    ) -> None:
        """
        Args:
            input_dir: What ``shard --output_dir`` wrote: a folder or ``s3://bucket/prefix``.
            batch_size: Samples per training batch (per device under DDP); evaluation batches
                may be smaller, so that every device gets as many.
            shuffle: A new order of the training samples every epoch, from ``seed``.
            seed: The shuffle order; LightningCLI links it to ``seed_everything``.
            augment: Random jitter of training images (never of val/test/predict).
            augment_on_device: Augment whole batches on the GPU after the transfer instead of
                each image in the loader workers; same distribution either way.
            rotation_degrees: Largest random rotation.
            translate: Largest random shift, as a fraction of the image size.
            crop_padding: Zero-pad by this many pixels, then crop back at random (photos: 4).
            horizontal_flip: Mirror half the images; None: for photos, not for the digits
                (as the data the shards were written from).
            num_workers: Loader worker processes per device; "auto": none when training on
                the CPU, the spare CPUs per GPU otherwise (see ``loader.json``).
            pin_memory: Page-locked host memory for faster host-to-GPU copies; None: when
                training on a CUDA GPU.
            cache_dir: Where chunks from object storage are kept while they are read; None:
                LitData's default. Local folders are read in place.
        """
        super().__init__()
        require_litdata()
        self.input_dir, self.cache_dir = input_dir.rstrip("/"), cache_dir
        # Plain numbers for checkpoints (see CheckedDataModule.__init__).
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, seed
        workers = num_workers if num_workers == "auto" else int(num_workers)
        # Not persistent: a worker would keep the dataset copy it started with, which never
        # hears of the next epoch (StreamingDataLoader sets it in the main process only).
        self.loader_options = {"num_workers": workers, "pin_memory": pin_memory}
        self.loader_options |= {"persistent_workers": False, "prefetch_factor": None}
        flip = self.meta["photos"] if horizontal_flip is None else horizontal_flip
        self.augmentation, self.device_augment, self.train_transform = training_augmentation(
            augment, augment_on_device, rotation_degrees, translate, crop_padding, flip
        )

    # --- what the shards hold -------------------------------------------------------------
    @cached_property
    def meta(self) -> dict[str, Any]:
        """``meta.json``, checked: refuses a folder that ``shard`` didn't write."""
        text = read_text(f"{self.input_dir}/meta.json")
        meta = json.loads(text) if text is not None else {}
        if meta.get("format") != FORMAT:
            found = "has no meta.json" if text is None else "holds a meta.json of another kind"
            raise DataError(
                f"{self.input_dir} {found}: it was not written by `{PACKAGE} shard`. Write "
                f"shards with: python -m {PACKAGE} shard --config configs/default.yaml "
                f"--output_dir {self.input_dir}"
            )
        return meta

    @property
    def state(self) -> dict[str, Any]:
        """What ``ImageDataModule`` fitted on the training split when the shards were written."""
        return self.meta["state"]

    def train_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training images in [0, 1], shaped (C, 1, 1)."""
        mean, std = (torch.tensor(self.meta[k]).view(-1, 1, 1) for k in ("train_mean", "train_std"))
        return mean, std

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """On resume and evaluation: the shards must hold the data the checkpoint learnt."""
        differ = [
            f"{key} {state_dict.get(key)} in the checkpoint, {self.state.get(key)} here"
            for key in ("class_names", "input_shape")
            if state_dict.get(key) != self.state.get(key)
        ]
        if differ:
            raise ValueError(
                f"The shards in {self.input_dir} (written from {self.meta['source']}) hold "
                f"other data than the checkpoint's: {'; '.join(differ)}."
            )

    # --- the run --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        for split in {"fit": ("train", "val"), "validate": ("val",)}.get(stage, ("test",)):
            self.split_dir(split)
        if stage == "fit" and self.trainer is not None and self.trainer.is_global_zero:
            run_dir = Path(self.trainer.default_root_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            shards = {"input_dir": self.input_dir, **self.meta}
            (run_dir / "shards.json").write_text(json.dumps(shards, indent=2) + "\n")
            rank_zero_info(self.loader_settings.describe())
            self.loader_settings.save(run_dir / "loader.json")

    def split_dir(self, split: str) -> str:
        """Where ``split``'s shards are; refuses a split that was not written."""
        path, count = f"{self.input_dir}/{split}", self.meta["counts"].get(split, 0)
        if not count or not exists(f"{path}/index.json"):
            raise DataError(
                f"The {split} split is missing: {path} holds no shards (meta.json counts "
                f"{count} samples). Write the shards again, into a new folder, with a {split} "
                f"split (--data.init_args.{split}_fraction)."
            )
        return path

    @cached_property
    def prepared(self) -> SimpleNamespace:
        """The test split by position, where shared code reads the checked modules'
        ``prepared.datasets`` (attributions of the first test samples)."""
        test = Positions(self.dataset("test", training=False), self.meta["counts"]["test"])
        return SimpleNamespace(datasets={"test": test})

    # --- loaders --------------------------------------------------------------------------
    @property
    def loader_settings(self) -> LoaderSettings:
        return resolve_loader(self.batch_size, **self.loader_options, trainer=self.trainer)

    def dataset(self, split: str, training: bool, fields: Any = None) -> StreamingDataset:
        """``split``'s shards as LitData's dataset, with three of its defaults changed."""
        fields = fields or ToTensors(self.train_transform if training else None)
        dataset = require_litdata().StreamingDataset(
            self.split_dir(split), cache_dir=self.cache_dir, shuffle=training and self.shuffle,
            seed=self.seed, transform=fields,
            # Shuffled, a worker whose share of a chunk starts at an offset decodes a window
            # of samples for every sample it reads (streaming/item_loader.py,
            # _fill_decode_window_mmap): 10x slower with two workers. One at a time instead.
            batch_decode=0 if training else "auto",
        )  # fmt: skip
        profile = dataset.posix_fast
        if profile is not None and profile.window_shuffle:
            # On parallel file systems LitData deals whole chunks to workers and cuts each to
            # the smallest non-empty share: a worker without a chunk leaves its rank short of
            # batches (utilities/shuffle.py, _associate_whole_chunks_to_workers). The global
            # shuffle splits chunks evenly.
            dataset.posix_fast = replace(profile, kind="posix")
        # From the second epoch on, LitData deals each node the chunks it had, and a chunk
        # that straddled two nodes to both: samples twice an epoch, unequal steps
        # (_associate_within_nodes). As one node, every epoch reshuffles over all ranks.
        dataset.distributed_env.num_nodes = 1
        return dataset

    def loader(self, split: str, training: bool, fields: Any = None) -> StreamingDataLoader:
        """``split``'s loader for this process; ``fields`` (e.g. ``sample_id``) maps a stored
        sample to what the loader yields instead of the training tensors."""
        dataset, settings = self.dataset(split, training, fields), self.loader_settings
        samples, ranks = self.meta["counts"][split], dataset.distributed_env.world_size
        if samples < (settings.batch_size * ranks if training and ranks > 1 else ranks):
            least = "batch_size x processes" if training else "processes"
            raise DataError(
                f"The {split} split has {samples} samples, fewer than {least} ({ranks} "
                "processes): every process needs a batch of its own."
            )
        batch_size = settings.batch_size
        if not training:
            batch_size = evaluation_batch_size(samples, ranks, batch_size)
        # Training: whole batches (BatchNorm fails on a batch of one) unless there is just
        # one, and LitData deals every rank as many. Evaluation: every sample once.
        drop_last = training and samples >= batch_size
        # Worker seeds from the data seed, not from the global generator, whose draws a
        # resumed run would otherwise shift.
        generator = torch.Generator().manual_seed(self.seed)
        kwargs = settings.kwargs() | {"batch_size": batch_size, "generator": generator}
        return require_litdata().StreamingDataLoader(dataset, drop_last=drop_last, **kwargs)

    def train_dataloader(self) -> StreamingDataLoader:
        loader = self.loader("train", training=True)
        same_steps_on_every_rank(loader)
        return loader

    def val_dataloader(self) -> StreamingDataLoader:
        return self.loader("val", training=False)

    def test_dataloader(self) -> StreamingDataLoader:
        return self.loader("test", training=False)

    def predict_dataloader(self) -> StreamingDataLoader:
        return self.loader("test", training=False)

    @property
    def predict_ids(self) -> list[str]:
        """Ids of the test samples in the order this process predicts them."""
        return [i for batch in self.loader("test", training=False, fields=sample_id) for i in batch]


def same_steps_on_every_rank(loader: StreamingDataLoader) -> None:
    """Refuse training batches or workers that differ between DDP ranks: the ranks with more
    steps would wait forever for the others."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    ranks: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, (len(loader), loader.num_workers))
    if len(set(ranks)) > 1:
        raise RuntimeError(
            f"(training batches, loader workers) differ between the ranks: {ranks}. LitData "
            "lowers num_workers where memory is short (LITDATA_POSIX_MAX_WORKERS=0 stops it)."
        )
