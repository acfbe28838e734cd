"""Image data: sources, augmentation, the decode cache, and one planted fault per check, each
caught and named."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from {{ cookiecutter.package_name }}.data.findings import DataError, raise_on_failures
from {{ cookiecutter.package_name }}.data.image import ImageDataModule, ImageTensorDataset
from {{ cookiecutter.package_name }}.data.image_checks import ImageRules

from .conftest import trainer_at

CLASSES = ("0", "1", "2")


@pytest.fixture(autouse=True)
def own_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The default ``.cache/images`` lands in a fresh folder, not in the project."""
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    return cwd


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
    x, y = datamodule.dataset("train")[0]
    assert x.dtype == torch.uint8 and x.shape == (1, 8, 8) and int(x.max()) > 200
    assert y.dtype == torch.int64


def loader(dataset: ImageTensorDataset, batch_size: int = 16) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, collate_fn=ImageTensorDataset.collate)


def test_batches_are_uint8_fetched_whole() -> None:
    datamodule = ImageDataModule(rotation_degrees=30)
    for dataset in (datamodule.dataset("train", augment=True), datamodule.dataset("val")):
        x, y = next(iter(loader(dataset)))
        assert x.dtype == torch.uint8 and x.shape == (16, 1, 8, 8)
        assert y.dtype == torch.int64 and y.shape == (16,)


def test_getitems_equals_stacked_getitem() -> None:
    dataset = ImageDataModule().dataset("val")
    indices = [5, 0, 17, 5, len(dataset) - 1]
    images, labels = dataset.__getitems__(indices)
    assert torch.equal(images, torch.stack([dataset[i][0] for i in indices]))
    assert torch.equal(labels, torch.stack([dataset[i][1] for i in indices]))


def test_train_statistics_are_in_unit_range_and_chunked() -> None:
    datamodule = ImageDataModule()
    train = datamodule.dataset("train")
    pixels = torch.stack([train[i][0] for i in range(len(train))]).double() / 255
    mean, std = datamodule.train_statistics()
    assert mean.shape == std.shape == (1, 1, 1) and 0 < float(mean) < 1
    torch.testing.assert_close(mean.flatten().double(), pixels.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(std.flatten().double(), pixels.std(dim=(0, 2, 3)))
    small = datamodule.train_statistics(chunk=7)  # a last chunk shorter than the others
    torch.testing.assert_close(small, (mean, std))


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
    assert all(d.dtype == torch.uint8 for d in draws)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    batch, _ = train.__getitems__([0, 1, 2])
    assert batch.dtype == torch.uint8 and batch.shape == (3, 1, 8, 8)
    for loader in (datamodule.val_dataloader(), datamodule.test_dataloader()):
        assert loader.dataset.transform is None
        assert torch.equal(loader.dataset[0][0], loader.dataset[0][0])


def test_augmentation_can_be_switched_off() -> None:
    datamodule = ImageDataModule(augment=False)
    assert datamodule.train_dataloader().dataset.transform is None
    assert not datamodule.augmentation.active


@pytest.mark.parametrize(
    ("source", "flips"),
    [({}, False), ({"torchvision": "MNIST"}, False), ({"torchvision": "CIFAR10"}, True)],
)
def test_horizontal_flip_follows_the_domain(source: dict, flips: bool) -> None:
    assert ImageDataModule(**source).augmentation.horizontal_flip is flips
    assert ImageDataModule(**source, horizontal_flip=not flips).augmentation.horizontal_flip is (
        not flips
    )


def test_own_photo_folders_are_flipped(tmp_path: Path) -> None:
    assert ImageDataModule(root=tmp_path).augmentation.horizontal_flip


@pytest.mark.parametrize("training", [True, False])
def test_device_augmentation_runs_after_transfer_in_training_only(training: bool) -> None:
    datamodule = ImageDataModule(augment_on_device=True, rotation_degrees=30, translate=0.2)
    assert datamodule.train_dataloader().dataset.transform is None  # not per sample as well
    images, labels = next(iter(datamodule.train_dataloader()))
    datamodule.trainer = trainer_at(training=training)
    moved, same_labels = datamodule.on_after_batch_transfer((images, labels), 0)
    assert moved.dtype == torch.uint8 and moved.shape == images.shape
    assert torch.equal(same_labels, labels)
    assert torch.equal(moved, images) is not training


def test_device_augmentation_draws_per_rank_epoch_and_batch() -> None:
    """The global generator is seeded alike on every DDP rank: the draws must not come from it,
    or every rank would crop and flip its shard the same way."""
    datamodule = ImageDataModule(augment_on_device=True, rotation_degrees=30, translate=0.2)
    batch = next(iter(datamodule.train_dataloader()))
    images = batch[0][:1].expand(64, -1, -1, -1).contiguous()  # one image, 64 draws

    def augmented(**where: int) -> torch.Tensor:
        datamodule.trainer = trainer_at(**where)
        torch.manual_seed(0)  # as seed_everything leaves every rank
        return datamodule.on_after_batch_transfer((images, batch[1]), 0)[0]

    first = augmented(rank=0)
    assert torch.equal(first, augmented(rank=0))  # a resumed run draws the same
    for other in ({"rank": 1}, {"epoch": 1}, {"batch": 1}):
        assert not torch.equal(first, augmented(**other)), other


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


def test_a_class_folder_of_one_image_is_named(tmp_path: Path) -> None:
    (write_folder(tmp_path) / "lonely").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "lonely" / "a.png")
    with pytest.raises(DataError, match=r"class 'lonely' has 1 sample"):
        _ = ImageDataModule(root=tmp_path).prepared


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
    assert finding.subject == str(bad) and "not an image in a format" in finding.message
    assert len(datamodule.prepared.ids) == 60


def test_unreadable_image_can_fail_the_run(tmp_path: Path) -> None:
    write_folder(tmp_path)
    (tmp_path / "0" / "bad.png").write_bytes(b"\x89PNG junk")
    datamodule = ImageDataModule(root=tmp_path, rules=ImageRules(unreadable_image="fail"))
    with pytest.raises(DataError, match=r"(?s)unreadable_image.*0/bad\.png"):
        raise_on_failures(datamodule.prepared.findings, type(datamodule))


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
    (finding,) = serious(ImageDataModule(root=tmp_path))
    assert finding.check == "near_duplicate_across_splits"
    assert finding.subject == "test/0/edited.png" and "train/0/000.png" in finding.message


def test_distinct_real_digits_at_32_px_are_no_near_duplicates(tmp_path: Path) -> None:
    """Scikit-learn's 1,797 handwritten digits (real, by 43 writers), upscaled to 32 px: 22
    pairs of distinct digits are within 4 hash bits; the pixels tell them apart, and a
    brightened copy of one still fires."""
    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        path = tmp_path / str(label) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grey = Image.fromarray((image * 255 / 16).astype(np.uint8))
        grey.resize((32, 32), Image.Resampling.BICUBIC).save(path)
    datamodule = ImageDataModule(root=tmp_path, cache_dir=None)
    assert not serious(datamodule)
    data = datamodule.prepared
    held_out = next(i for i, s in zip(data.ids, data.splits, strict=True) if s == "test")
    training = next(i for i, s in zip(data.ids, data.splits, strict=True) if s == "train")
    copy = np.asarray(Image.open(tmp_path / training), dtype=int) + 10
    Image.fromarray(np.clip(copy, 0, 255).astype(np.uint8)).save(tmp_path / held_out)
    (finding,) = serious(ImageDataModule(root=tmp_path, cache_dir=None))
    assert finding.subject == held_out and training in finding.message


def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format MNIST ships in: magic (0, 0, ubyte, ndim), big-endian sizes, bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_dataset_from_its_own_files(
    tmp_path: Path, capsys: pytest.CaptureFixture, decodes: list
) -> None:
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
    again = ImageDataModule(root=tmp_path, torchvision="MNIST").prepared
    assert again.fingerprint == datamodule.prepared.fingerprint and len(decodes) == 1
    assert "reused" in capsys.readouterr().out
    write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(20) % 2)  # a changed file: rebuilt
    assert ImageDataModule(root=tmp_path, torchvision="MNIST").prepared and len(decodes) == 2


def test_unknown_torchvision_dataset_is_refused() -> None:
    with pytest.raises(ValueError, match="no dataset 'Mnist'"):
        _ = ImageDataModule(torchvision="Mnist").num_classes


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere is not a directory"):
        _ = ImageDataModule(root=tmp_path / "nowhere").num_classes


# --- the decode cache -------------------------------------------------------------------


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list:
    """One entry per call of ``decode_all``: a reused cache decodes nothing."""
    calls = []
    decode_all = ImageDataModule.decode_all

    def counted(self, *args, **kwargs):
        calls.append(args)
        return decode_all(self, *args, **kwargs)

    monkeypatch.setattr(ImageDataModule, "decode_all", counted)
    return calls


def cached(tmp_path: Path, **kwargs) -> ImageDataModule:
    return ImageDataModule(root=tmp_path / "data", cache_dir=tmp_path / "cache", **kwargs)


def cache_files(tmp_path: Path) -> list[str]:
    return sorted(p.suffix for p in (tmp_path / "cache").iterdir())


def assert_same_data(one: ImageDataModule, other: ImageDataModule) -> None:
    a, b = one.prepared, other.prepared
    assert (a.ids, a.splits, a.labels, a.fingerprint) == (b.ids, b.splits, b.labels, b.fingerprint)
    assert a.findings == b.findings
    for split in ("train", "val", "test"):
        x, y = one.dataset(split).__getitems__(list(range(len(one.dataset(split)))))
        x2, y2 = other.dataset(split).__getitems__(list(range(len(other.dataset(split)))))
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_second_prepare_reuses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    write_folder(tmp_path / "data")
    first = cached(tmp_path)
    assert first.prepared and cache_files(tmp_path) == [".json", ".npy"]
    assert "Image cache: decoded 60 images in" in capsys.readouterr().out

    def no_decoding(*args, **kwargs):
        raise AssertionError("a reused cache decodes nothing")

    monkeypatch.setattr(ImageDataModule, "decode_all", no_decoding)
    again = cached(tmp_path)
    assert_same_data(first, again)
    assert isinstance(again.dataset("train").images, np.memmap)
    assert "), reused" in capsys.readouterr().out


def test_another_image_size_or_channels_rebuilds(tmp_path: Path, decodes: list) -> None:
    write_folder(tmp_path / "data")
    assert cached(tmp_path).input_shape == [3, 16, 16]
    assert cached(tmp_path, image_size=12).dataset("val")[0][0].shape == (3, 12, 12)
    assert cached(tmp_path, channels=1).dataset("val")[0][0].shape == (1, 16, 16)
    assert len(decodes) == 3 and cache_files(tmp_path) == [".json"] * 3 + [".npy"] * 3
    assert cached(tmp_path, image_size=12).prepared and len(decodes) == 3


def test_touched_or_added_file_rebuilds(tmp_path: Path, decodes: list) -> None:
    data = write_folder(tmp_path / "data")
    before = cached(tmp_path).prepared
    touched = data / "0" / "000.png"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cached(tmp_path).prepared.fingerprint == before.fingerprint and len(decodes) == 2
    Image.open(data / "1" / "021.png").rotate(90).save(data / "1" / "added.png")
    assert "1/added.png" in cached(tmp_path).prepared.ids and len(decodes) == 3


def test_truncated_or_half_written_cache_is_rebuilt(tmp_path: Path, decodes: list) -> None:
    write_folder(tmp_path / "data")
    first = cached(tmp_path)
    assert first.prepared
    (array,) = (tmp_path / "cache").glob("*.npy")
    whole = array.read_bytes()
    array.unlink()  # a new file: truncating the one ``first`` maps in place would crash it
    array.write_bytes(whole[: len(whole) // 2])
    assert_same_data(first, cached(tmp_path))
    assert len(decodes) == 2 and array.read_bytes() == whole
    array.with_suffix(".json").unlink()  # killed between the two renames
    assert_same_data(first, cached(tmp_path))
    assert len(decodes) == 3


def test_interrupted_build_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_folder(tmp_path / "data")

    def interrupted(self, source, indices, channels, size, out):
        out[:5] = 7
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ImageDataModule, "decode_all", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _ = cached(tmp_path).prepared
    assert cache_files(tmp_path) == []
    assert cached(tmp_path).prepared and cache_files(tmp_path) == [".json", ".npy"]


def test_findings_survive_a_reuse(tmp_path: Path, decodes: list) -> None:
    data = write_folder(tmp_path / "data")
    png = (data / "1" / "021.png").read_bytes()
    (data / "1" / "broken.png").write_bytes(png[: len(png) // 2])
    Image.open(data / "2" / "041.png").resize((40, 24)).save(data / "2" / "big.png")
    Image.open(data / "0" / "000.png").convert("L").point(lambda v: 255 - v).save(
        data / "0" / "grey.png"
    )
    first = cached(tmp_path)
    checks = {f.check for f in first.prepared.findings}
    assert {"unreadable_image", "size_mismatch", "channel_mismatch"} <= checks
    again = cached(tmp_path)
    assert_same_data(first, again)
    assert len(decodes) == 1
    (unreadable,) = found(again, "unreadable_image")
    assert unreadable.subject == str(data / "1" / "broken.png")

    dropping = cached(tmp_path, rules=ImageRules(size_mismatch="drop"))
    assert "2/big.png" not in dropping.prepared.ids and len(decodes) == 2


def test_moved_data_reuses_the_cache_naming_the_new_paths(tmp_path: Path, decodes: list) -> None:
    data = write_folder(tmp_path / "data")
    png = (data / "1" / "021.png").read_bytes()
    (data / "1" / "broken.png").write_bytes(png[: len(png) // 2])
    assert cached(tmp_path).prepared
    moved = data.rename(tmp_path / "moved")
    datamodule = ImageDataModule(root=moved, cache_dir=tmp_path / "cache")
    (unreadable,) = found(datamodule, "unreadable_image")
    assert unreadable.subject == str(moved / "1" / "broken.png") and len(decodes) == 1


def test_no_cache_dir_writes_nothing(
    tmp_path: Path, own_working_directory: Path, decodes: list
) -> None:
    write_folder(tmp_path / "data")
    for _ in range(2):
        assert ImageDataModule(root=tmp_path / "data", cache_dir=None).prepared
    assert len(decodes) == 2 and not list(own_working_directory.iterdir())
    assert not (tmp_path / "cache").exists()
    assert ImageDataModule(root=tmp_path / "data").prepared  # the default: .cache/images
    assert len(list((own_working_directory / ".cache" / "images").glob("*.npy"))) == 1


def test_embedded_digits_are_not_cached(own_working_directory: Path) -> None:
    assert ImageDataModule().prepared and not list(own_working_directory.iterdir())


def test_a_memory_map_pickles_as_its_file_name(tmp_path: Path) -> None:
    """What worker processes receive under spawn/forkserver: a name to reopen, not a copy."""
    write_folder(tmp_path / "data", per_class=60)
    train = cached(tmp_path).dataset("train", augment=False)
    copied = pickle.loads(pickle.dumps(train))
    assert len(pickle.dumps(train)) < train.images.nbytes / 4
    assert isinstance(copied.images, np.memmap)
    indices = list(range(len(train)))
    for ours, theirs in zip(train.__getitems__(indices), copied.__getitems__(indices), strict=True):
        assert torch.equal(ours, theirs)


def bursts(datamodule: ImageDataModule, path: Path) -> dict[str, str]:
    """Writes a split_by_mapping: the images of each class in bursts of 4."""
    data, mapping = datamodule.prepared, {}
    for label in sorted(set(data.labels)):
        same = [i for i, y in zip(data.ids, data.labels, strict=True) if y == label]
        mapping |= {sample: f"{label}-{k // 4}" for k, sample in enumerate(same)}
    path.write_text("id,group\n" + "".join(f"{i},{g}\n" for i, g in mapping.items()))
    return mapping


def splits_per_burst(data, mapping: dict[str, str]) -> list[int]:
    spans: dict[str, set] = {}
    for sample, split in zip(data.ids, data.splits, strict=True):
        spans.setdefault(mapping[sample], set()).add(split)
    return [len(s) for s in spans.values()]


def test_split_by_mapping_keeps_each_burst_in_one_split(tmp_path: Path) -> None:
    mapping = bursts(ImageDataModule(), tmp_path / "bursts.csv")
    assert max(splits_per_burst(ImageDataModule().prepared, mapping)) > 1  # the leak
    datamodule = ImageDataModule(split_by_mapping=tmp_path / "bursts.csv")
    data = datamodule.prepared
    assert max(splits_per_burst(data, mapping)) == 1
    assert data.split_groups == [mapping[i] for i in data.ids]
    assert abs(data.splits.count("test") / len(data.splits) - 0.15) < 0.03
    assert datamodule.split_settings()["split_by_mapping"] == str(tmp_path / "bursts.csv")
    datamodule.write_reports(tmp_path / "run")
    header = (tmp_path / "run" / "split_manifest.csv").read_text().splitlines()[0]
    assert header == "id,label,split,group"


def test_a_split_by_mapping_of_other_ids_is_refused(tmp_path: Path) -> None:
    (tmp_path / "other.csv").write_text("id,group\nnot-an-image,a\n")
    with pytest.raises(DataError, match=r"split_by_mapping .*none of its ids"):
        _ = ImageDataModule(split_by_mapping=tmp_path / "other.csv").prepared
