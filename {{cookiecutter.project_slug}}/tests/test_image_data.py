"""Image data: sources, augmentation, and one planted fault per check, each caught and named."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from {{ cookiecutter.package_name }}.data.findings import DataError, raise_on_failures
from {{ cookiecutter.package_name }}.data.image import ImageDataModule
from {{ cookiecutter.package_name }}.data.image_checks import ImageRules

CLASSES = ("0", "1", "2")


def digit_images(per_class: int = 20) -> list[tuple[str, Image.Image]]:
    """(class, RGB image) pairs from the embedded digits, upscaled to 16x16."""
    digits = load_digits()
    pairs = []
    for name in CLASSES:
        for image in digits.images[digits.target == int(name)][:per_class]:
            grey = Image.fromarray(np.uint8(image * 255 / 16)).resize((16, 16))
            pairs.append((name, grey.convert("RGB")))
    return pairs


def write_folder(root: Path, per_class: int = 20, splits: bool = False) -> Path:
    """``root/<class>/*.png``, or ``root/{train,val,test}/<class>/*.png`` with ``splits``."""
    for i, (name, image) in enumerate(digit_images(per_class)):
        split = ("train", "train", "train", "val", "test")[i % 5] if splits else ""
        path = root / split / name / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    return root


def found(datamodule: ImageDataModule, check: str) -> list:
    return [f for f in datamodule.prepared.findings if f.check == check]


def serious(datamodule: ImageDataModule) -> list:
    return [f for f in datamodule.prepared.findings if f.severity != "info"]


def test_digits_are_embedded() -> None:
    datamodule = ImageDataModule()
    assert datamodule.input_shape == [1, 8, 8]
    assert datamodule.class_names == [str(d) for d in range(10)]
    x, _ = datamodule.dataset("train")[0]
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_clean_digits_raise_no_warning() -> None:
    datamodule = ImageDataModule()
    assert not serious(datamodule), serious(datamodule)
    assert {f.check for f in datamodule.prepared.findings} == {
        "near_duplicate_across_splits",  # skipped: 8x8 is too small to hash
        "class_imbalance",
    }


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


def test_class_folders_are_split_by_the_seed(tmp_path: Path) -> None:
    datamodule = ImageDataModule(root=write_folder(tmp_path), seed=1)
    assert datamodule.class_names == list(CLASSES)
    assert datamodule.input_shape == [3, 16, 16]  # RGB files, their common size
    data = datamodule.prepared
    assert {split: data.splits.count(split) for split in ("train", "val", "test")} == {
        "train": 42, "val": 9, "test": 9,
    }  # fmt: skip
    assert not serious(datamodule)
    other = ImageDataModule(root=tmp_path, seed=2).prepared
    assert data.splits != other.splits and data.fingerprint == other.fingerprint


def test_given_splits_are_used_as_given(tmp_path: Path) -> None:
    data = ImageDataModule(root=write_folder(tmp_path, splits=True)).prepared
    for sample, split in zip(data.ids, data.splits, strict=True):
        assert sample.startswith(f"{split}/")


def test_image_size_and_channels_from_config(tmp_path: Path) -> None:
    datamodule = ImageDataModule(root=write_folder(tmp_path), image_size=12, channels=1)
    assert datamodule.input_shape == [1, 12, 12]
    assert datamodule.dataset("train")[0][0].shape == (1, 12, 12)


def test_truncated_image_is_skipped_and_named(tmp_path: Path) -> None:
    write_folder(tmp_path)
    bad = tmp_path / "1" / "broken.png"
    data = (tmp_path / "1" / "021.png").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    datamodule = ImageDataModule(root=tmp_path)
    (finding,) = found(datamodule, "unreadable_image")
    assert finding.subject == str(bad) and finding.severity == "warning"
    assert "1/broken.png" not in datamodule.prepared.ids
    assert len(datamodule.prepared.ids) == 60


def test_non_image_with_an_image_suffix_is_skipped_and_named(tmp_path: Path) -> None:
    write_folder(tmp_path)
    bad = tmp_path / "2" / "notes.jpg"
    bad.write_text("not a picture")
    datamodule = ImageDataModule(root=tmp_path)
    (finding,) = found(datamodule, "unreadable_image")
    assert finding.subject == str(bad) and "does not decode" in finding.message
    assert len(datamodule.prepared.ids) == 60


def test_unreadable_image_can_fail_the_run(tmp_path: Path) -> None:
    write_folder(tmp_path)
    (tmp_path / "0" / "bad.png").write_bytes(b"\x89PNG junk")
    datamodule = ImageDataModule(root=tmp_path, rules=ImageRules(unreadable_image="fail"))
    with pytest.raises(DataError, match=r"(?s)unreadable_image.*0/bad\.png"):
        raise_on_failures(datamodule.prepared.findings)


def test_nothing_usable_fails_before_training_naming_the_files(tmp_path: Path) -> None:
    for name in CLASSES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_text("no image")
    with pytest.raises(DataError, match=r"(?s)No usable training sample.*0/x\.png"):
        _ = ImageDataModule(root=tmp_path).num_classes


def test_greyscale_among_rgb_is_converted_and_named(tmp_path: Path) -> None:
    write_folder(tmp_path)
    grey = tmp_path / "0" / "grey.png"
    # Inverted, so that neither is an exact copy of an image already there.
    Image.open(tmp_path / "0" / "000.png").convert("L").point(lambda v: 255 - v).save(grey)
    rgba = tmp_path / "1" / "alpha.png"
    Image.open(tmp_path / "1" / "021.png").point(lambda v: 255 - v).convert("RGBA").save(rgba)
    datamodule = ImageDataModule(root=tmp_path)
    findings = {f.subject: f for f in found(datamodule, "channel_mismatch")}
    assert set(findings) == {str(grey), str(rgba)}
    assert "greyscale" in findings[str(grey)].message and findings[str(grey)].action == "convert"
    assert len(datamodule.prepared.ids) == 62 and datamodule.input_shape[0] == 3


def test_odd_sized_image_is_resized_or_dropped(tmp_path: Path) -> None:
    write_folder(tmp_path)
    odd = tmp_path / "2" / "big.png"
    Image.open(tmp_path / "2" / "041.png").resize((40, 24)).save(odd)
    datamodule = ImageDataModule(root=tmp_path)
    (finding,) = found(datamodule, "size_mismatch")
    assert finding.subject == str(odd) and "24x40" in finding.message
    assert "2/big.png" in datamodule.prepared.ids
    dropped = ImageDataModule(root=tmp_path, rules=ImageRules(size_mismatch="drop"))
    assert "2/big.png" not in dropped.prepared.ids


def test_duplicate_across_splits_is_named_and_dropped(tmp_path: Path) -> None:
    write_folder(tmp_path, splits=True)
    copy = tmp_path / "val" / "0" / "copy-of-000.png"
    copy.write_bytes((tmp_path / "train" / "0" / "000.png").read_bytes())
    datamodule = ImageDataModule(root=tmp_path)
    (finding,) = found(datamodule, "duplicate_across_splits")
    assert finding.subject == "val/0/copy-of-000.png" and "train/0/000.png" in finding.message
    assert finding.severity == "warning" and finding.subject not in datamodule.prepared.ids


def smooth_image(rng: np.random.Generator, side: int = 48) -> Image.Image:
    """A distinct photo-like image: random low-frequency noise, upscaled."""
    small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC)


def test_near_duplicates_fire_on_a_planted_copy_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(60):
        split = ("train", "train", "train", "val", "test")[i % 5]
        path = tmp_path / split / CLASSES[i % 3] / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        smooth_image(rng).save(path)
    assert not serious(ImageDataModule(root=tmp_path))  # distinct images stay quiet

    original = Image.open(tmp_path / "train" / "0" / "000.png")
    brighter = np.clip(np.asarray(original, dtype=int) + 12, 0, 255).astype("uint8")
    Image.fromarray(brighter).save(tmp_path / "test" / "0" / "edited.png")
    (finding,) = found(ImageDataModule(root=tmp_path), "near_duplicate_across_splits")
    assert finding.subject == "test/0/edited.png" and "train/0/000.png" in finding.message


def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format MNIST ships in: magic (0, 0, ubyte, ndim), big-endian sizes, bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_dataset_from_its_own_files(tmp_path: Path) -> None:
    """A tiny MNIST in its on-disk format: the real loading code runs, the network never."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 3)
    datamodule = ImageDataModule(root=tmp_path, torchvision="MNIST")
    assert datamodule.input_shape == [1, 28, 28]
    assert datamodule.class_names == ["0 - zero", "1 - one", "2 - two"]
    splits = datamodule.prepared.splits
    assert splits.count("test") == 20 and splits.count("val") == 9  # 15 % of the training part


def test_unknown_torchvision_dataset_is_refused() -> None:
    with pytest.raises(ValueError, match="no dataset 'Mnist'"):
        _ = ImageDataModule(torchvision="Mnist").num_classes


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere is not a directory"):
        _ = ImageDataModule(root=tmp_path / "nowhere").num_classes
