"""Batch augmentation: its own draw per sample, the same pixels as torchvision for the same draw,
and the same distribution of draws as the per-sample CPU pipeline, read back from probe images."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency, ks_2samp
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from {{ cookiecutter.package_name }}.data.augment import Augmentation, BatchAugment, Draws

ALPHA = 1e-3  # "different" below this p-value; the RNG is seeded, so no test is flaky
SAMPLES = 3000
FULL = Augmentation(rotation_degrees=15, translate=0.1, crop_padding=3, horizontal_flip=True)
CROP_FLIP = Augmentation(crop_padding=4, horizontal_flip=True)  # no affine part: a gather
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU")),
]
DOT = (10, 8)  # row, column: left of centre, far enough from the edges to survive any shift


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


def dot_probe(height: int = 32, width: int = 40) -> torch.Tensor:
    """Black, one white pixel: where it lands is the shift; which half it lands in, the flip."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    image[:, DOT[0], DOT[1]] = 255
    return image


def ray_probe(size: int = 33) -> torch.Tensor:
    """Black, a white ray from the centre to the right: its direction is the rotation."""
    image = torch.zeros(3, size, size, dtype=torch.uint8)
    image[:, size // 2, size // 2 : size - 2] = 255
    return image


def per_sample(augmentation: Augmentation, image: torch.Tensor, n: int = SAMPLES) -> torch.Tensor:
    transform = augmentation.cpu_transform()
    return torch.stack([transform(image) for _ in range(n)])


def batched(augmentation: Augmentation, image: torch.Tensor, n: int = SAMPLES) -> torch.Tensor:
    return BatchAugment(augmentation)(image.expand(n, -1, -1, -1).contiguous())


def shifts_and_flips(images: torch.Tensor) -> np.ndarray:
    """(dy, dx, flipped) of the dot in each image, coded as one integer per image."""
    width = images.shape[-1]
    flat = images[:, 0].flatten(1)
    assert (flat.max(1).values == 255).all(), "the dot left the image"
    y, x = flat.argmax(1) // width, flat.argmax(1) % width
    flipped = x >= width // 2
    x = torch.where(flipped, width - 1 - x, x)
    return (((y - DOT[0] + 50) * 100 + x - DOT[1] + 50) * 2 + flipped).numpy()


def angles(images: torch.Tensor) -> np.ndarray:
    """Direction of the ray in degrees, from the centroid of its pixels about the centre."""
    height, width = images.shape[-2:]
    weight = images[:, 0].double()
    ys = torch.arange(height) - (height - 1) / 2
    xs = torch.arange(width) - (width - 1) / 2
    y, x = (weight * ys[:, None]).sum((1, 2)), (weight * xs).sum((1, 2))
    return torch.atan2(y, x).rad2deg().numpy()


def chi2_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    """Chi-square test that two samples of categories share one distribution; categories too
    rare for the test's approximation are pooled into one."""
    values, codes = np.unique(np.concatenate([a, b]), return_inverse=True)
    table = np.stack([np.bincount(c, minlength=len(values)) for c in np.split(codes, [len(a)])])
    rare = table.sum(0) < 10
    table = np.column_stack([table[:, ~rare], table[:, rare].sum(1)]) if rare.any() else table
    return chi2_contingency(table).pvalue


def reference(image: torch.Tensor, draws: Draws, i: int, padding: int) -> torch.Tensor:
    """Sample ``i`` through torchvision's own kernels with the batch path's draws."""
    height, width = image.shape[-2:]
    angle = 0.0 if draws.angle is None else float(draws.angle[i])
    translate = [0, 0] if draws.translate is None else draws.translate[i].tolist()
    nearest = v2.InterpolationMode.NEAREST
    out = TF.affine(image, angle, translate, 1.0, [0.0, 0.0], interpolation=nearest, fill=0)
    left, top = draws.crop[i].tolist()
    out = TF.crop(TF.pad(out, [padding], fill=0), top, left, height, width)
    return TF.horizontal_flip(out) if draws.flip[i] else out


@pytest.mark.parametrize("augmentation", [FULL, CROP_FLIP], ids=["full", "crop+flip"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.bfloat16])
def test_keeps_shape_dtype_and_device(
    dtype: torch.dtype, device: str, augmentation: Augmentation
) -> None:
    images = torch.randint(0, 256, (8, 3, 12, 10), device=device).to(dtype)
    out = BatchAugment(augmentation)(images)
    assert (out.shape, out.dtype, out.device) == (images.shape, dtype, images.device)
    assert not torch.equal(out, images)


def test_inactive_augmentation_is_the_identity() -> None:
    nothing = Augmentation()
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert not nothing.active and nothing.cpu_transform() is None
    assert torch.equal(BatchAugment(nothing)(images), images)
    assert all(Augmentation(**{field: 1}).active for field in Augmentation.__dataclass_fields__)


def test_draws_differ_within_a_batch_and_follow_the_seed() -> None:
    augmentation = Augmentation(crop_padding=4, horizontal_flip=True)
    images = dot_probe().expand(64, -1, -1, -1)
    codes = shifts_and_flips(batched(augmentation, images[0], 64))
    assert len(set(codes)) > 32 and len(set(codes % 2)) == 2
    # What this module is for: torchvision draws once for a whole batch tensor.
    torchvision_batch = augmentation.cpu_transform()(images.clone())
    assert len(set(shifts_and_flips(torchvision_batch))) == 1
    torch.manual_seed(1)
    again = batched(augmentation, images[0], 64)
    torch.manual_seed(1)
    assert torch.equal(batched(augmentation, images[0], 64), again)


@pytest.mark.parametrize(
    ("augmentation", "dtype", "size"),
    [
        (FULL, torch.float64, (32, 32)),
        (FULL, torch.float64, (20, 27)),
        (Augmentation(translate=0.2, crop_padding=3, horizontal_flip=True), torch.uint8, (20, 27)),
        (CROP_FLIP, torch.uint8, (20, 27)),
    ],
    ids=["float64 square", "float64 oblong", "uint8 no rotation", "uint8 crop+flip"],
)
def test_same_pixels_as_torchvision_for_the_same_draws(
    augmentation: Augmentation, dtype: torch.dtype, size: tuple[int, int]
) -> None:
    """Exact per pixel; rotations in float64, where rounding can't tip a nearest neighbour."""
    images = torch.randint(0, 256, (32, 3, *size)).to(dtype)
    batch = BatchAugment(augmentation)
    draws = batch.draw(len(images), *size, images.device)
    out = batch.transform(images, draws)
    for i, image in enumerate(images):
        assert torch.equal(out[i], reference(image, draws, i, augmentation.crop_padding)), i


@pytest.mark.parametrize(
    "augmentation",
    [
        Augmentation(translate=0.1, horizontal_flip=True),
        Augmentation(crop_padding=4, horizontal_flip=True),
        Augmentation(translate=0.15, crop_padding=1),
    ],
    ids=["translate+flip", "crop+flip", "translate+crop"],
)
def test_same_shift_and_flip_distribution_as_the_cpu_path(augmentation: Augmentation) -> None:
    cpu = shifts_and_flips(per_sample(augmentation, dot_probe()))
    batch = shifts_and_flips(batched(augmentation, dot_probe()))
    assert chi2_pvalue(cpu, batch) > ALPHA
    # The flip rate alone too: spread over every (shift, flip) cell, a biased coin can hide.
    assert chi2_pvalue(cpu % 2, batch % 2) > ALPHA


def test_same_rotation_distribution_as_the_cpu_path() -> None:
    augmentation = Augmentation(rotation_degrees=20)
    cpu, batch = per_sample(augmentation, ray_probe()), batched(augmentation, ray_probe())
    assert ks_2samp(angles(cpu), angles(batch)).pvalue > ALPHA


class UniformTranslate(BatchAugment):
    """The plausible mistake: whole-pixel shifts uniform on [-r, r], r = round(translate * size),
    where torchvision rounds a uniform draw on [-translate * size, translate * size]."""

    def draw(self, n: int, height: int, width: int, device: torch.device, generator=None) -> Draws:
        draws = super().draw(n, height, width, device, generator)
        reach = [round(self.augmentation.translate * side) for side in (width, height)]
        shifts = [torch.randint(-r, r + 1, (n,), device=device) for r in reach]
        return draws._replace(translate=torch.stack(shifts, 1).float())


WRONG = {
    "twice the padding": (
        Augmentation(crop_padding=4, horizontal_flip=True),
        BatchAugment(Augmentation(crop_padding=8, horizontal_flip=True)),
    ),
    "uniform whole-pixel shifts": (
        Augmentation(translate=0.1),
        UniformTranslate(Augmentation(translate=0.1)),
    ),
}


@pytest.mark.parametrize("wrong", WRONG)
def test_a_wrong_shift_distribution_is_detected(wrong: str) -> None:
    """The shift test can fail: each of these is told apart from the CPU path."""
    right, batch = WRONG[wrong]
    image = dot_probe(48, 56)
    cpu = shifts_and_flips(per_sample(right, image))
    wrong_shifts = shifts_and_flips(batch(image.expand(SAMPLES, -1, -1, -1).contiguous()))
    assert chi2_pvalue(cpu, wrong_shifts) < ALPHA


def test_a_wrong_rotation_distribution_is_detected() -> None:
    cpu = angles(per_sample(Augmentation(rotation_degrees=20), ray_probe()))
    batch = angles(batched(Augmentation(rotation_degrees=25), ray_probe()))
    assert ks_2samp(cpu, batch).pvalue < ALPHA


def test_flip_off_never_flips() -> None:
    augmentation = Augmentation(rotation_degrees=0, translate=0.1, crop_padding=4)
    assert not BatchAugment(augmentation).draw(1000, 32, 32, torch.device("cpu")).flip.any()
    assert not (shifts_and_flips(batched(augmentation, dot_probe(), 1000)) % 2).any()


def test_cpu_transform_survives_pickling_for_spawned_workers() -> None:
    transform = pickle.loads(pickle.dumps(FULL.cpu_transform()))
    image = torch.randint(0, 256, (3, 20, 27), dtype=torch.uint8)
    out = transform(image)
    assert (out.shape, out.dtype) == (image.shape, image.dtype)
