"""Image data: digits loading and train-only augmentation."""

from __future__ import annotations

import torch

from {{ cookiecutter.package_name }}.data.image import ImageDataModule


def test_digits_are_embedded() -> None:
    datamodule = ImageDataModule()
    assert datamodule.input_shape == [1, 8, 8]
    assert datamodule.class_names == [str(d) for d in range(10)]
    x, _ = datamodule.dataset("train")[0]
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_augmentation_applies_to_training_only() -> None:
    datamodule = ImageDataModule(rotation_degrees=30, translate=0.2)
    train = datamodule.train_dataloader().dataset
    assert train.transform is not None
    torch.manual_seed(0)
    draws = [train[0][0] for _ in range(5)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    for loader in (datamodule.val_dataloader(), datamodule.test_dataloader()):
        assert loader.dataset.transform is None
        assert torch.equal(loader.dataset[0][0], loader.dataset[0][0])


def test_augmentation_can_be_switched_off() -> None:
    assert ImageDataModule(augment=False).train_dataloader().dataset.transform is None
