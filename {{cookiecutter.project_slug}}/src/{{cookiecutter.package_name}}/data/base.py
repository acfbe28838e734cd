"""What every data module here shares: checked data, a fitted state that travels in the
checkpoint, the run's profile and split manifest, and seeded loaders.

A subclass reads its source, runs its checks and applies its rules in ``prepare()``; this
class turns the result into reports, loaders and the state that ``predict`` restores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_info
from matplotlib.figure import Figure
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from .. import reports
from .findings import DataError, Finding, print_findings, raise_on_failures, save_profile
from .groups import WithGroups
from .loading import LoaderSettings, Workers, resolve_loader
from .manifest import save_manifest
from .sampling import EpochSampler, mixed_seed
from .split import SPLITS, Split, check_folds
from .state import STATE_VERSION, check_split, split_record


class InputError(DataError):
    """A new input (for ``predict`` or ``serve``) the model can't take; says which and why."""


@dataclass
class Prepared:
    """Checked, cleaned and split data, and everything fitted on its training split."""

    datasets: dict[Split, Dataset]
    train_labels: np.ndarray  # class codes of the training samples
    ids: list[str]  # every kept sample, with its label, split and content hash
    labels: list[str]
    splits: list[str]
    fingerprint: str
    findings: list[Finding]
    state: dict[str, Any]  # fitted on the training split: saved in checkpoints
    counts: dict[str, Any] = field(default_factory=dict)
    groups: list[str] | None = None  # each sample's group, when groups are configured
    split_groups: list[str] | None = None  # each sample's group that the split kept whole


class FittedState:
    """What a data module fitted on the training split, read from its ``state`` dict."""

    state: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        return self.state["class_names"]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> list[int]:
        return self.state["input_shape"]

    @property
    def drift_profile(self) -> dict[str, Any] | None:
        """The training profile ``serve`` compares recent inputs with (see ``drift``); None
        in checkpoints saved before profiles were."""
        return self.state.get("drift_profile")

    @property
    def class_weights(self) -> list[float] | None:
        """Loss weights per class when the imbalance rule asks for them (read by the model)."""
        return self.state.get("class_weights")


class DeviceBatches:
    """Training batches finished on the device they were moved to (augmented there, when the
    augmentation runs batched on the device; a subclass may also gather them there)."""

    trainer: L.Trainer | None
    seed: int
    device_augment: Callable[..., torch.Tensor] | None = None
    # What this module offers when the GPU waits for its batches (benchmark's advice).
    device_speedups: tuple[str, ...] = ()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training:
            return self.training_batch(batch)
        return batch

    def training_batch(self, batch: Any) -> Any:
        """A training batch as the model takes it, from the batch the loader delivered."""
        if self.device_augment is None:
            return batch
        images, labels = batch
        return self.device_augment(images, self.batch_generator(images.device)), labels

    def batch_generator(self, device: torch.device) -> torch.Generator:
        """The draws for this batch, a function of (seed, epoch, batch, rank): every DDP rank
        augments its own way (the global generator is seeded alike on every rank), and a
        resumed run draws what the uninterrupted one drew."""
        trainer = self.trainer
        assert trainer is not None
        batch = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        key = mixed_seed(self.seed, trainer.current_epoch, batch, trainer.global_rank)
        return torch.Generator(device=device).manual_seed(key)


class CheckedDataModule(FittedState, DeviceBatches, L.LightningDataModule):
    """Base of the project's data modules; see the module docstring."""

    collate_fn: Callable | None = None  # for datasets that fetch whole batches at once
    serving_input: str | None = None  # what ``serve`` takes: "files" or "records" (JSON rows)
    # Other data modules whose checkpoints hold a state of this module's kind (fitted_from).
    states_also_from: tuple[str, ...] = ()

    def __init__(
        self,
        seed: int,
        val_fraction: float,
        test_fraction: float,
        batch_size: int,
        num_workers: Workers,
        pin_memory: bool | None,
        persistent_workers: bool,
        prefetch_factor: int | None,
        profile: bool,
        fitted_from: Path | None,
        max_group_gap: float = 0.05,
        min_group_size: int = 30,
        folds: int | None = None,
        fold: int | None = None,
    ) -> None:
        super().__init__()
        check_folds(folds, fold)
        self.folds = None if folds is None else int(folds)
        self.fold = None if fold is None else int(fold)
        self.max_group_gap, self.min_group_size = max_group_gap, int(min_group_size)
        # Plain numbers: the bounded types the command line checked would be pickled into
        # checkpoints, which torch.load(weights_only=True) then refuses.
        self.seed, self.val_fraction = int(seed), float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.profile, self.fitted_from = profile, fitted_from
        self.reported_to: Path | None = None
        self.batch_size = int(batch_size)
        self.loader_options = {
            "num_workers": num_workers if num_workers == "auto" else int(num_workers),
            "pin_memory": pin_memory,
            "persistent_workers": persistent_workers,
            "prefetch_factor": None if prefetch_factor is None else int(prefetch_factor),
        }

    # --- what a subclass provides -------------------------------------------------------
    def prepare(self) -> Prepared:
        """Read, check, clean and split the data; fit the state on the training split."""
        raise NotImplementedError

    def read_predict_inputs(self) -> tuple[Dataset, list[str]] | None:
        """New inputs for ``predict`` and their ids, or None to predict the test split."""
        return None

    def held_out_inputs(self, count: int) -> list:
        """Up to ``count`` held-out inputs in the form ``convert_inputs`` takes them."""
        raise NotImplementedError

    def validation_inputs(self, count: int) -> tuple[list, np.ndarray]:
        """Up to ``count`` validation inputs as ``serve`` takes them, and their class codes."""
        raise NotImplementedError

    def raw_inputs(self) -> Any:
        """What an export takes as raw inputs and prepares inside (``export.RawInputs``)."""
        raise NotImplementedError

    def convert_inputs(self, inputs: Sequence) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """New inputs for ``serve`` as one batch, prepared as ``predict`` prepares its inputs,
        and their values of the features the drift profile watches; raises InputError."""
        raise NotImplementedError

    def profile_figures(self) -> dict[str, Figure]:
        """Pictures of the data, by file stem."""
        return {}

    # --- the fitted state -----------------------------------------------------------------
    @cached_property
    def prepared(self) -> Prepared:
        try:
            prepared = self.prepare()
        except AttributeError as error:  # LightningCLI's links read hasattr(data, "num_classes"):
            # an AttributeError would be taken for "no such attribute", the real one lost
            raise RuntimeError(f"Preparing the data failed: {error!r}") from error
        if self.fitted_from is not None:  # evaluating a checkpoint: on its split only
            check_split(self.state, self.split_of(prepared), str(self.fitted_from))
        return prepared

    def split_settings(self) -> dict[str, Any]:
        """What decides the split (a subclass adds its own), recorded in the state."""
        return {
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "folds": self.folds,
            "fold": self.fold,
        }

    def split_of(self, data: Prepared) -> dict[str, Any]:
        return split_record(self.split_settings(), data.ids, data.splits, data.fingerprint)

    @cached_property
    def predict_inputs(self) -> tuple[Dataset, list[str]] | None:
        return self.read_predict_inputs()

    @cached_property
    def state(self) -> dict[str, Any]:
        """Fitted on the training split, or restored from ``fitted_from`` without reading it."""
        if self.fitted_from is None:
            data = self.prepared
            return {**data.state, "version": STATE_VERSION, "split": self.split_of(data)}
        path = Path(self.fitted_from)
        if path.is_dir():  # DeepSpeed's folder: Lightning's entries are in the model states
            path = path / "checkpoint" / "mp_rank_00_model_states.pt"
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        for key in (type(self).__qualname__, *self.states_also_from):
            if key in checkpoint:
                return checkpoint[key]
        saved_by = [k for k in checkpoint if k.endswith("DataModule")] or ["no data module"]
        raise ValueError(
            f"{self.fitted_from} was not saved with {type(self).__qualname__} (it holds "
            f"{saved_by[0]}): it is a checkpoint of another model or task."
        )

    @property
    def group_names(self) -> list[str] | None:
        """The groups whose test metrics ``test`` compares, or None when none are set."""
        groups = self.prepared.groups
        return sorted(set(groups)) if groups is not None else None

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning calls this after setup: data read here must mean what it meant then,
        split as it was then."""
        if "prepared" not in self.__dict__:  # predicting new inputs: nothing read to compare
            return
        for key in ("class_names", "input_shape"):
            if state_dict.get(key) != self.prepared.state.get(key):
                raise ValueError(
                    f"The checkpoint's data has {key}={state_dict.get(key)}, this data has "
                    f"{self.prepared.state.get(key)}: the data changed since the checkpoint."
                )
        source = getattr(self.trainer, "ckpt_path", None) or "The checkpoint"
        check_split(state_dict, self.split_of(self.prepared), str(source))

    # --- reports --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        run_dir = Path(self.trainer.default_root_dir) if self.trainer is not None else None
        # Once per run directory: ``fit --model.lr auto`` sets up twice (LR finder, then fit).
        if run_dir is not None and self.trainer.is_global_zero and run_dir != self.reported_to:
            self.reported_to = run_dir
            self.write_reports(run_dir, self.trainer.loggers)
            rank_zero_info(self.loader_settings.describe())
            self.loader_settings.save(run_dir / "loader.json")
        raise_on_failures(self.prepared.findings, type(self))

    def write_reports(self, run_dir: Path, loggers: list | tuple = ()) -> None:
        """The split manifest and fingerprint always; the profile unless ``profile`` is off."""
        data = self.prepared
        save_manifest(
            run_dir, data.ids, data.labels, data.splits, data.fingerprint, data.split_groups
        )
        if not self.profile:
            return
        counts = {"samples": len(data.ids), **data.counts, "fingerprint": data.fingerprint}
        path = save_profile(run_dir / "profile.json", counts, data.findings)
        print_findings(data.findings)
        figures = {"class_balance": reports.class_balance(data.labels, data.splits)}
        for name, figure in (figures | self.profile_figures()).items():
            reports.publish_figure(figure, run_dir / "plots" / f"profile_{name}.png", loggers)
        rank_zero_info(f"Data profile: {path} and {run_dir / 'plots'}/profile_*.png")

    # --- loaders --------------------------------------------------------------------------
    @property
    def loader_settings(self) -> LoaderSettings:
        """Loader settings for the machine and trainer this module runs with."""
        return resolve_loader(self.batch_size, **self.loader_options, trainer=self.trainer)

    def loader(
        self, dataset: Dataset, settings: LoaderSettings | None = None, **kwargs: Any
    ) -> StatefulDataLoader:
        """A DataLoader whose position (and shuffle order) is saved in checkpoints, so a run
        stopped mid-epoch resumes at the next batch, not at the epoch's start."""
        settings = settings or self.loader_settings
        return StatefulDataLoader(
            dataset, collate_fn=self.collate_fn, **settings.kwargs(), **kwargs
        )

    def shard(self, dataset: Dataset) -> UnrepeatedDistributedSampler | None:
        """This DDP rank's part of an evaluation split; None in a single process.

        Lightning's default pads every rank to the same length with repeated samples, which
        would count some validation and test samples twice. Here the split is divided
        exactly, so ranks may differ by one sample and the synced metrics equal a single
        process's. (Training drops the tail instead, see :class:`EpochSampler`: every rank
        must take as many steps.)
        """
        if self.trainer is None or self.trainer.world_size == 1:
            return None
        ranks = {"num_replicas": self.trainer.world_size, "rank": self.trainer.global_rank}
        return UnrepeatedDistributedSampler(dataset, shuffle=False, **ranks)

    def evaluation_loader(self, dataset: Dataset) -> StatefulDataLoader:
        # A generator of its own for the workers' seeds: without one, each validation draws
        # them from the global generator, and dropout's stream would depend on how many
        # validations ran (a run resumed in one runs it again).
        generator = torch.Generator().manual_seed(self.seed)
        return self.loader(dataset, sampler=self.shard(dataset), generator=generator)

    def train_dataloader(self) -> StatefulDataLoader:
        return self.training_loader(self.prepared.datasets["train"])

    def training_loader(
        self, train: Dataset, settings: LoaderSettings | None = None
    ) -> StatefulDataLoader:
        """Shuffled or class-balanced ``train`` (this rank's shard of it), whole batches.

        The order is a function of the data seed and the epoch (see :class:`EpochSampler`),
        so a resumed run sees the batches an uninterrupted one sees, in every later epoch too.
        """
        weights = None
        if self.state.get("balanced_sampler"):
            labels = self.prepared.train_labels
            weights = 1.0 / np.bincount(labels)[labels]
        trainer = self.trainer
        ranks = (1, 0) if trainer is None else (trainer.world_size, trainer.global_rank)
        sampler = EpochSampler(train, self.seed, weights, *ranks)
        # The workers' seeds follow the data seed alone (the sampler draws from its own).
        generator = torch.Generator().manual_seed(self.seed)
        # Whole batches only (BatchNorm fails on a batch of one), unless there is just one.
        drop_last = len(train) > self.batch_size
        options = {"sampler": sampler, "generator": generator, "drop_last": drop_last}
        return self.loader(train, settings, **options)

    def val_dataloader(self) -> StatefulDataLoader:
        return self.evaluation_loader(self.prepared.datasets["val"])

    def test_dataloader(self) -> StatefulDataLoader:
        data = self.prepared
        if data.groups is None:
            return self.evaluation_loader(data.datasets["test"])
        names = self.group_names
        tested = zip(data.groups, data.splits, strict=True)
        codes = torch.tensor([names.index(group) for group, split in tested if split == "test"])
        return self.evaluation_loader(WithGroups(data.datasets["test"], codes))

    def predict_dataloader(self) -> StatefulDataLoader:
        if self.predict_inputs is None:
            tested = self.prepared.splits.count("test")
            rank_zero_info(f"No new inputs given: predicting the test split ({tested} samples).")
            return self.test_dataloader()
        return self.evaluation_loader(self.predict_inputs[0])

    def dataset(self, split: Split) -> Dataset:
        """One split's samples, unaugmented."""
        return self.prepared.datasets[split]

    def inputs_of(self, ids: Sequence[str]) -> torch.Tensor:
        """These samples' inputs as the model takes them (unaugmented), from any split."""
        data, where = self.prepared, {}
        for split in SPLITS:
            named = [i for i, s in zip(data.ids, data.splits, strict=True) if s == split]
            where |= {sample: (split, j) for j, sample in enumerate(named)}
        return torch.stack([self.dataset(s)[j][0] for s, j in (where[i] for i in ids)])

    @property
    def val_ids(self) -> list[str]:
        """The validation samples' ids, in the validation loader's order."""
        data = self.prepared
        return [i for i, split in zip(data.ids, data.splits, strict=True) if split == "val"]

    @property
    def predict_ids(self) -> list[str]:
        """Row names of ``predictions.csv``: file paths, row ids or test sample ids."""
        if self.predict_inputs is not None:
            return self.predict_inputs[1]
        data = self.prepared
        return [i for i, split in zip(data.ids, data.splits, strict=True) if split == "test"]
