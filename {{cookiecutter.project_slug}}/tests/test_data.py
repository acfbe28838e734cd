"""Data tests that hold for every task: splits, statistics, seeding."""

from __future__ import annotations

import json
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

from {{ cookiecutter.package_name }}.data import loading
from {{ cookiecutter.package_name }}.data.findings import DataError
from {{ cookiecutter.package_name }}.data.split import SPLITS, assign_splits, stratified_split

from .conftest import datamodule_class


@pytest.fixture
def datamodule():
    return datamodule_class()(seed=42)


def test_split_is_disjoint_and_complete(datamodule) -> None:
    data = datamodule.prepared
    assert len(set(data.ids)) == len(data.ids) == len(data.splits)  # each sample in one split
    total = len(data.ids)
    assert sum(len(datamodule.dataset(split)) for split in SPLITS) == total
    assert data.splits.count("test") == pytest.approx(0.15 * total, abs=1)
    assert data.splits.count("val") == pytest.approx(0.15 * total, abs=1)


def test_split_keeps_class_balance() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    train, val, test = stratified_split(labels, 0.2, 0.2, seed=0)
    for part in (train, val, test):
        shares = np.bincount(labels[part], minlength=4) / len(part)
        np.testing.assert_allclose(shares, [0.5, 0.25, 0.15, 0.1], atol=0.03)


def test_split_depends_only_on_seed() -> None:
    labels = np.repeat(np.arange(3), 40)
    first, again = stratified_split(labels, 0.2, 0.2, 7), stratified_split(labels, 0.2, 0.2, 7)
    other = stratified_split(labels, 0.2, 0.2, 8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[2], other[2])


def test_test_split_does_not_move_when_validation_grows() -> None:
    labels = np.repeat(np.arange(3), 40)
    assert np.array_equal(
        stratified_split(labels, 0.1, 0.2, 0)[2], stratified_split(labels, 0.3, 0.2, 0)[2]
    )


@pytest.mark.parametrize("given", [[None] * 21, ["test"] + [None] * 20])
def test_a_class_too_small_to_split_is_named_by_its_name(given: list) -> None:
    labels = np.array([0] * 10 + [1] * 10 + [2])
    with pytest.raises(DataError, match=r"class 'eel' has 1 sample.*add samples"):
        assign_splits(labels, given, 0.2, 0.2, 0, class_names=["cat", "dog", "eel"])


@pytest.mark.parametrize("val, test", [(0.0, 0.2), (0.5, 0.5), (0.2, 1.0)])
def test_split_rejects_impossible_fractions(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="must each lie"):
        stratified_split(np.repeat(np.arange(2), 10), val, test, 0)


def features(datamodule, split: str) -> torch.Tensor:
    dataset = datamodule.dataset(split)
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return x.float() / 255 if x.dtype == torch.uint8 else x  # the model's scaling of pixels


def test_statistics_come_from_training_split_only(datamodule) -> None:
    mean, std = datamodule.train_statistics()
    train = features(datamodule, "train")
    everything = torch.cat([features(datamodule, split) for split in ("train", "val", "test")])
    per_channel = [0, *range(2, train.dim())]  # every axis but the channel/feature one
    torch.testing.assert_close(mean.flatten(), train.mean(dim=per_channel))
    torch.testing.assert_close(std.flatten(), train.std(dim=per_channel))
    assert not torch.allclose(mean.flatten(), everything.mean(dim=per_channel))


def test_same_seed_gives_same_first_batch() -> None:
    def first_batch(seed: int) -> torch.Tensor:
        L.seed_everything(seed)
        return next(iter(datamodule_class()(seed=seed).train_dataloader()))[0]

    assert torch.equal(first_batch(3), first_batch(3))
    assert not torch.equal(first_batch(3), first_batch(4))


def test_linked_shapes_match_the_data(datamodule) -> None:
    x, y = next(iter(datamodule.val_dataloader()))
    assert list(x.shape[1:]) == datamodule.input_shape
    assert int(y.max()) < datamodule.num_classes == len(datamodule.class_names)


def gpu_trainer(devices: int) -> SimpleNamespace:
    return SimpleNamespace(accelerator=CUDAAccelerator(), num_devices=devices)


@pytest.mark.parametrize(("cpus", "devices", "workers"), [(16, 1, 8), (16, 2, 7), (2, 1, 1)])
def test_auto_workers_use_the_spare_cpus_per_gpu(monkeypatch, cpus, devices, workers) -> None:
    monkeypatch.setattr(loading, "available_cpus", lambda: cpus)
    settings = loading.resolve_loader(64, "auto", None, True, None, gpu_trainer(devices))
    assert (settings.num_workers, settings.pin_memory) == (workers, True)
    assert settings.kwargs()["persistent_workers"] is True


def test_auto_loader_on_the_cpu_uses_the_main_process() -> None:
    trainer = SimpleNamespace(accelerator=CPUAccelerator(), num_devices=1)
    settings = loading.resolve_loader(64, "auto", None, True, 4, trainer)
    assert (settings.num_workers, settings.pin_memory) == (0, False)
    assert settings.kwargs() == {"batch_size": 64, "num_workers": 0, "pin_memory": False}


def test_configured_loader_settings_win_over_auto() -> None:
    settings = loading.resolve_loader(8, 3, True, False, 4, gpu_trainer(1))
    assert settings.kwargs() == {
        "batch_size": 8, "num_workers": 3, "pin_memory": True,
        "persistent_workers": False, "prefetch_factor": 4,
    }  # fmt: skip


def test_fit_saves_the_loader_it_chose(fitted) -> None:
    saved = json.loads((fitted.run_dir / "loader.json").read_text())
    assert saved["num_workers"] == 0 and saved["reason"].startswith("auto")
