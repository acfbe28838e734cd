"""A training split held on the device: the same samples as host batches, augmented there,
and refused up front when it would not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from {{ cookiecutter.package_name }}.data.device_path import choose
from {{ cookiecutter.package_name }}.data.findings import DataError
from {{ cookiecutter.package_name }}.data.image import ImageDataModule
from {{ cookiecutter.package_name }}.data.resident import check_fits

from .conftest import NO_LOGGER, run, trainer_at


def first_training_batch(datamodule: ImageDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    """The first batch of the epoch as the model gets it, once on the (CPU) device."""
    batch = next(iter(datamodule.train_dataloader()))
    datamodule.trainer = trainer_at(training=True)
    return datamodule.on_after_batch_transfer(batch, 0)


def test_resident_batches_hold_the_samples_host_batches_hold() -> None:
    on_host = ImageDataModule(augment=False, seed=3)
    resident = ImageDataModule(augment=False, seed=3, resident=True)
    loader = resident.train_dataloader()
    indices = next(iter(loader))
    assert loader.num_workers == 0 and indices.dtype == torch.int64 and indices.ndim == 1
    images, labels = first_training_batch(resident)
    expected_images, expected_labels = first_training_batch(on_host)
    assert images.dtype == torch.uint8
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_resident_split_is_augmented_on_the_device_in_training_only() -> None:
    datamodule = ImageDataModule(resident=True, rotation_degrees=30, translate=0.2, seed=3)
    assert datamodule.train_transform is None and datamodule.device_augment is not None
    indices = next(iter(datamodule.train_dataloader()))
    validation = next(iter(datamodule.val_dataloader()))
    untouched, _ = datamodule.resident_split.gather(indices)
    datamodule.trainer = trainer_at(training=True)
    images, _ = datamodule.on_after_batch_transfer(indices, 0)
    assert images.shape == untouched.shape and not torch.equal(images, untouched)
    datamodule.trainer = trainer_at(training=False)  # validation batches pass as they are
    assert datamodule.on_after_batch_transfer(validation, 0) is validation


def test_a_split_too_large_for_the_device_is_refused_with_the_remedy() -> None:
    check_fits(needed=2**30, free=4 * 2**30, device=torch.device("cuda:0"))  # a quarter: fine
    with pytest.raises(DataError, match=r"needs 3\.00 GiB on cuda:0.*Set data\.resident false"):
        check_fits(needed=3 * 2**30, free=4 * 2**30, device=torch.device("cuda:0"))


def test_fit_trains_from_a_resident_split(tmp_path: Path) -> None:
    cli = run("fit", tmp_path, *NO_LOGGER, "--data.resident=true")
    assert cli.trainer.global_step == 2 * 4  # two epochs of four batches (conftest.QUICK)
    assert cli.trainer.datamodule.resident_split.tensors is not None
    saved = json.loads((Path(cli.trainer.default_root_dir) / "loader.json").read_text())
    assert saved["resident"] is True


GIB = 2**30
CUDA = torch.device("cuda:0")


@pytest.mark.parametrize(
    ("device", "free", "resident", "on_device"),
    [
        (CUDA, 8 * GIB, True, True),  # fits in half the free memory: resident, augmented there
        (CUDA, 1.5 * GIB, False, False),  # too large: workers load and augment
        (torch.device("cpu"), None, False, False),  # no GPU: nothing to gain
    ],
)
def test_auto_keeps_the_split_on_a_gpu_when_it_fits(device, free, resident, on_device) -> None:
    path = choose("auto", "auto", device, needed=1 * GIB, free=free)
    assert (path.resident, path.augment_on_device) == (resident, on_device)
    assert path.reason.startswith("resident auto: ")


def test_a_configured_choice_is_kept_whatever_the_device() -> None:
    assert choose(False, "auto", CUDA, needed=1, free=8 * GIB).resident is False
    forced = choose(False, True, torch.device("cpu"), needed=1, free=None)
    assert (forced.resident, forced.augment_on_device) == (False, True)
    assert choose(True, False, CUDA, needed=1, free=8 * GIB).augment_on_device  # resident: there


def test_a_default_cpu_fit_says_what_it_chose_and_why(tmp_path: Path) -> None:
    cli = run("fit", tmp_path, *NO_LOGGER)
    saved = json.loads((Path(cli.trainer.default_root_dir) / "loader.json").read_text())
    assert saved["resident"] is False and saved["augment_on_device"] is False
    assert "resident auto: training on cpu" in saved["device_path"]
    datamodule = cli.trainer.datamodule
    assert datamodule.train_transform is not None and datamodule.device_augment is None
    assert cli.model.channels_last is False  # auto: convolutions on a CUDA GPU only


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_default_gpu_fit_keeps_the_digits_on_the_gpu_in_nhwc(tmp_path: Path) -> None:
    gpu = ["--trainer.accelerator=gpu", "--trainer.precision=bf16-mixed"]
    cli = run("fit", tmp_path, *NO_LOGGER, *gpu)
    saved = json.loads((Path(cli.trainer.default_root_dir) / "loader.json").read_text())
    assert saved["resident"] is True and saved["augment_on_device"] is True
    assert cli.trainer.datamodule.resident_split.tensors[0].device.type == "cuda"
    assert cli.model.channels_last is True
    conv = next(m for m in cli.model.network.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
