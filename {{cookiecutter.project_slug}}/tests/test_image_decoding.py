"""Image decoding: 16-bit values, EXIF orientation, transparency and every mode read the same
way by fit, predict and serve, too many pixels refused from the header, and any byte string
either decoded correctly or refused by name (property-based, with Hypothesis)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from {{ cookiecutter.package_name }}.data.base import InputError
from {{ cookiecutter.package_name }}.data.image import ImageDataModule
from {{ cookiecutter.package_name }}.data.image_decoding import MAX_PIXELS, decode, read_image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # values per pixel by PNG colour type
# (colour type, bit depth): every combination the PNG standard allows.
PNG_KINDS = [(0, 1), (0, 2), (0, 4), (0, 8), (0, 16), (2, 8), (2, 16), (3, 1), (3, 2), (3, 4),
             (3, 8), (4, 8), (4, 16), (6, 8), (6, 16)]  # fmt: skip
QUICK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- files written byte by byte, and what they must decode to ---------------------------------
def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def exif(orientation: int) -> bytes:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags.tobytes()  # b"Exif\0\0" + TIFF


def png(values: np.ndarray, colour_type: int, depth: int, extra: bytes = b"") -> bytes:
    """A PNG of ``values`` (H, W, samples), as the standard lays it out; ``extra``: chunks
    before the pixels."""
    height, width = values.shape[:2]
    rows = []
    for row in values.reshape(height, -1):
        if depth == 16:
            rows.append(row.astype(">u2").tobytes())
        else:  # 1, 2, 4 bits a value: packed, most significant first, rows padded to a byte
            bits = (row[:, None].astype(np.uint8) >> np.arange(depth)[::-1]) & 1
            rows.append(np.packbits(bits.ravel()).tobytes())
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\0" + row for row in rows))
    return SIGNATURE + chunk(b"IHDR", header) + extra + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return (colour * alpha[..., None] + 255.0 * (255 - alpha[..., None])) / 255


def upright(pixels: np.ndarray, orientation: int | None) -> np.ndarray:
    """(H, W, C) as EXIF orientation ``orientation`` says to show it (numpy, not Pillow)."""
    turn = {
        2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1), 8: lambda a: np.rot90(a, 1),
    }  # fmt: skip
    return turn.get(orientation, lambda a: a)(pixels)


@st.composite
def png_files(draw, max_side: int = 10) -> tuple[bytes, np.ndarray]:
    """A PNG of any colour type, bit depth, size, transparency and orientation, and its
    8-bit reading, (H, W, 1 or 3) floats: values scaled by the bit depth, over white."""
    colour_type, depth = draw(st.sampled_from(PNG_KINDS))
    shape = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    top = 2**depth - 1
    dtype = np.uint16 if depth == 16 else np.uint8
    values = draw(arrays(dtype, (*shape, SAMPLES[colour_type]), elements=st.integers(0, top)))
    eight = values.astype(np.float64) * 255 / top if depth < 16 else (values >> 8).astype(float)
    extra, alpha = b"", None
    if colour_type == 3:  # palette: any colours, some entries perhaps see-through
        palette = draw(arrays(np.uint8, (top + 1, 3)))
        extra = chunk(b"PLTE", palette.tobytes())
        eight = palette[values[..., 0]].astype(np.float64)
        if draw(st.booleans()):
            opacity = draw(arrays(np.uint8, (draw(st.integers(1, top + 1)),)))
            extra += chunk(b"tRNS", opacity.tobytes())
            alpha = np.pad(opacity, (0, top + 1 - len(opacity)), constant_values=255)[
                values[..., 0]
            ]
    elif colour_type in (4, 6):
        alpha, eight = eight[..., -1], eight[..., :-1]
    elif (depth != 16 or colour_type == 0) and draw(st.booleans()):
        # A transparent value (16-bit RGB: refused, see below), one that the image holds.
        key = values[draw(st.integers(0, shape[0] - 1)), draw(st.integers(0, shape[1] - 1))]
        extra = chunk(b"tRNS", struct.pack(f">{len(key)}H", *key.tolist()))
        alpha = np.where((values == key).all(axis=-1), 0, 255)
    orientation = draw(st.none() | st.integers(1, 8))
    if orientation is not None:
        extra += chunk(b"eXIf", exif(orientation)[6:])
    if alpha is not None:
        eight = over_white(eight, alpha.astype(np.float64))
    return png(values, colour_type, depth, extra), upright(eight, orientation)


def assert_reads(decoded: Image.Image, expected: np.ndarray, tolerance: float = 0.5) -> None:
    """``decoded`` holds ``expected`` (H, W, C) within rounding; greyscale may come as RGB."""
    assert decoded.mode in {"L", "RGB"}
    pixels = np.asarray(decoded).reshape(*decoded.size[::-1], -1).astype(np.float64)
    assert pixels.shape[:2] == expected.shape[:2]
    assert np.abs(pixels - expected).max() <= tolerance


def assert_refused_by_name(error: InputError, subject: str) -> None:
    assert str(error).startswith(f"{subject}: ") and len(str(error)) > len(subject) + 20


# --- the properties -----------------------------------------------------------------------------
@QUICK
@given(png_files())
def test_any_png_decodes_to_its_8_bit_values_upright(file: tuple[bytes, np.ndarray]) -> None:
    data, expected = file
    # Pillow composites transparency in integers: within one level of the exact value.
    assert_reads(read_image(io.BytesIO(data), "x.png"), expected, tolerance=1.0)


@QUICK
@given(png_files(), st.data())
def test_a_truncated_file_decodes_whole_or_is_refused_by_name(
    file: tuple[bytes, np.ndarray], data: st.DataObject
) -> None:
    whole, expected = file
    cut = whole[: data.draw(st.integers(0, len(whole) - 1))]
    try:
        decoded = read_image(io.BytesIO(cut), "cut.png")
    except InputError as error:
        assert_refused_by_name(error, "cut.png")
    else:  # only the end marker went: every pixel is there
        assert_reads(decoded, expected, tolerance=1.0)


# (format, mode) of the files Pillow writes, beside the PNGs written byte by byte above.
SAVED = [("JPEG", "L"), ("JPEG", "RGB"), ("JPEG", "CMYK"), ("WEBP", "RGB"), ("WEBP", "RGBA"),
         ("BMP", "1"), ("BMP", "L"), ("BMP", "P"), ("BMP", "RGB")]  # fmt: skip


@QUICK
@given(
    st.sampled_from(SAVED), st.integers(1, 24), st.integers(1, 24), st.none() | st.integers(1, 8),
    st.integers(0, 2**32 - 1), st.floats(0, 1),
)  # fmt: skip
def test_other_formats_decode_upright_or_cut_are_refused_by_name(
    saved: tuple[str, str], height: int, width: int, orientation: int | None, seed: int,
    kept: float,
) -> None:  # fmt: skip
    (form, mode), name = saved, f"photo.{saved[0].lower()}"
    values = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    image = Image.fromarray(values, "RGBA").convert(mode)
    out = io.BytesIO()
    options = {"lossless": True} if form == "WEBP" else {}
    if orientation is not None and form != "BMP":  # BMP holds no EXIF
        options["exif"] = exif(orientation)
    image.save(out, form, **options)
    whole = out.getvalue()
    # Pillow's own reading, over white, neither turned nor clipped.
    plain = np.asarray(Image.open(io.BytesIO(whole)).convert("RGBA")).astype(np.float64)
    shown = orientation if "exif" in options else None
    expected = upright(over_white(plain[..., :3], plain[..., 3]), shown)
    assert_reads(read_image(io.BytesIO(whole), name), expected, tolerance=1.0)
    try:
        decoded = read_image(io.BytesIO(whole[: int(kept * (len(whole) - 1))]), name)
    except InputError as error:
        assert_refused_by_name(error, name)
    else:
        assert_reads(decoded, expected, tolerance=1.0)


@QUICK
@given(st.sampled_from([b"", SIGNATURE, b"\xff\xd8\xff", b"BM", b"RIFF"]), st.binary(max_size=300))
def test_any_bytes_decode_or_are_refused_by_name(start: bytes, rest: bytes) -> None:
    try:
        decoded = read_image(io.BytesIO(start + rest), "upload.png")
    except InputError as error:
        assert_refused_by_name(error, "upload.png")
    else:
        assert decoded.mode in {"L", "RGB"}


@QUICK
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 1600))
def test_too_many_pixels_are_refused_before_decoding(height: int, width: int, limit: int) -> None:
    # The pixels after the header are not there: only a refusal from the header names the limit.
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
    with pytest.raises(InputError) as refused:
        read_image(io.BytesIO(data), "big.png", max_pixels=limit)
    if height * width > limit:
        assert f"{height}x{width} pixels ({height * width:,}) is over the limit of {limit:,}" in (
            str(refused.value)
        )
    else:
        assert "fails to decode" in str(refused.value)


def test_a_header_claiming_billions_of_pixels_is_refused_at_once() -> None:
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 16, 6, 0, 0, 0)
    data = SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1000)))
    with pytest.raises(InputError, match=r"bomb\.png: 100000x100000 pixels \(10,000,000,000\)"):
        read_image(io.BytesIO(data), "bomb.png")
    assert MAX_PIXELS < 100_000**2


# --- every mode Pillow hands over: a faithful reading, or a refusal that names it ---------------
def image_of(mode: str, values: np.ndarray) -> Image.Image:
    """An in-memory image, as a torchvision dataset hands one over, of (H, W, C) values."""
    image = Image.new(mode, values.shape[1::-1])
    flat = values.reshape(-1, values.shape[2]).tolist()
    image.putdata([tuple(v) if len(v) > 1 else v[0] for v in flat])
    return image


GREY = np.array([[[0], [100]], [[200], [255]]])
COLOURS = np.array([[[0, 10, 20], [100, 110, 120]], [[200, 210, 220], [255, 255, 255]]])
ALPHAS = np.array([[[255], [0]], [[128], [255]]])
MODE_CASES: dict[str, tuple[Callable[[], Image.Image], np.ndarray | str]] = {
    "1": (lambda: image_of("1", GREY // 255 * 255), GREY // 255 * 255),
    "L": (lambda: image_of("L", GREY), GREY),
    "RGB": (lambda: image_of("RGB", COLOURS), COLOURS),
    "LA": (
        lambda: image_of("LA", np.concatenate([GREY, ALPHAS], -1)),
        over_white(GREY, ALPHAS[..., 0]),
    ),
    "RGBA": (
        lambda: image_of("RGBA", np.concatenate([COLOURS, ALPHAS], -1)),
        over_white(COLOURS, ALPHAS[..., 0]),
    ),
    "P": (lambda: palette_image(), COLOURS),
    "P with a transparent entry": (
        lambda: transparent_palette(), np.array([[[255, 255, 255], [0, 255, 0]]]),
    ),
    "CMYK": (lambda: image_of("RGB", COLOURS).convert("CMYK"), COLOURS),
    "I;16": (lambda: Image.fromarray((GREY[..., 0] * 257).astype(np.uint16)), GREY),
    "I (no bit depth known)": (lambda: image_of("I", GREY), "I pixels"),
    "F": (lambda: image_of("F", GREY), "F pixels"),
    "HSV": (lambda: image_of("RGB", COLOURS).convert("HSV"), "HSV pixels"),
}  # fmt: skip


def palette_image() -> Image.Image:
    image = Image.new("P", (2, 2))
    image.putpalette(COLOURS.reshape(-1).tolist())
    image.putdata([0, 1, 2, 3])
    return image


def transparent_palette() -> Image.Image:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 255, 0])
    image.putdata([0, 1])
    image.info["transparency"] = 0
    return image


@pytest.mark.parametrize("case", MODE_CASES)
def test_each_mode_reads_faithfully_or_is_refused_by_name(case: str) -> None:
    make, expected = MODE_CASES[case]
    if isinstance(expected, str):
        with pytest.raises(InputError, match=f"^memory/0: {expected} .* save the image as"):
            decode(make(), "memory/0")
    else:
        assert_reads(decode(make(), "memory/0"), expected.astype(np.float64), tolerance=1.0)


def test_a_16_bit_rgb_png_with_a_transparent_colour_is_refused() -> None:
    """Pillow reads 16-bit RGB at 8 bits and then can't find the transparent colour."""
    values = np.array([[[1000, 2000, 300], [65535, 0, 200]]])
    data = png(values, 2, 16, chunk(b"tRNS", struct.pack(">3H", 1000, 2000, 300)))
    with pytest.raises(InputError, match=r"^key\.png: .*16-bit RGB .*transparent"):
        read_image(io.BytesIO(data), "key.png")


# --- fit, predict and serve read alike ---------------------------------------------------------
def sixteen_bit_grey(rng: np.random.Generator) -> tuple[bytes, str, np.ndarray]:
    values = rng.integers(0, 65536, (12, 16), dtype=np.uint16)
    out = io.BytesIO()
    Image.fromarray(values).save(out, "PNG")
    return out.getvalue(), ".png", (values >> 8)[..., None]


def sixteen_bit_rgb(rng: np.random.Generator) -> tuple[bytes, str, np.ndarray]:
    values = rng.integers(0, 65536, (12, 16, 3), dtype=np.uint16)
    return png(values, 2, 16), ".png", values >> 8


def turned_png(rng: np.random.Generator) -> tuple[bytes, str, np.ndarray]:
    values = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(values).save(out, "PNG", exif=exif(6))
    return out.getvalue(), ".png", upright(values, 6)


def turned_jpeg(rng: np.random.Generator) -> tuple[bytes, str, np.ndarray]:
    values = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(values).save(out, "JPEG", exif=exif(8), quality=95)
    plain = np.asarray(Image.open(io.BytesIO(out.getvalue())).convert("RGB"))
    return out.getvalue(), ".jpg", upright(plain, 8)


KINDS = {
    "16-bit grey PNG": sixteen_bit_grey,
    "16-bit RGB PNG": sixteen_bit_rgb,
    "PNG turned by EXIF": turned_png,
    "JPEG turned by EXIF": turned_jpeg,
}


def write_files(root: Path, make: Callable, count: int = 8, seed: int = 0) -> dict[str, tuple]:
    """``count`` files in each of two class folders: {id: (bytes, expected (H, W, C))}."""
    rng, files = np.random.default_rng(seed), {}
    for i in range(2 * count):
        data, suffix, expected = make(rng)
        sample = f"{i % 2}/{i:03d}{suffix}"
        (root / sample).parent.mkdir(parents=True, exist_ok=True)
        (root / sample).write_bytes(data)
        files[sample] = (data, expected)
    return files


def fitted_pixels(datamodule: ImageDataModule) -> dict[str, np.ndarray]:
    """Each kept sample's training-data pixels, (H, W, C), by id."""
    data, pixels = datamodule.prepared, {}
    for split in ("train", "val", "test"):
        ids = [i for i, s in zip(data.ids, data.splits, strict=True) if s == split]
        rows = datamodule.dataset(split).pixels(range(len(ids)))
        pixels |= {sample: row.transpose(1, 2, 0) for sample, row in zip(ids, rows, strict=True)}
    return pixels


@pytest.mark.parametrize("kind", KINDS)
def test_fit_predict_and_serve_read_alike(tmp_path: Path, kind: str) -> None:
    files = write_files(tmp_path, KINDS[kind])
    datamodule = ImageDataModule(root=tmp_path, predict_root=tmp_path, cache_dir=None)
    fitted = fitted_pixels(datamodule)
    assert set(fitted) == set(files)  # none dropped as a duplicate of another white image
    predicted, ids = datamodule.read_predict_inputs()
    predicted = dict(zip(ids, predicted.pixels(range(len(ids))), strict=True))
    for sample, (data, expected) in files.items():
        served = datamodule.convert_inputs([(sample, data)])[0][0].numpy()
        readings = (fitted[sample], predicted[sample], served)
        for reading, path in zip(readings, ("fit", "predict", "serve"), strict=True):
            pixels = reading if path == "fit" else reading.transpose(1, 2, 0)
            np.testing.assert_array_equal(pixels, expected, err_msg=f"{path}: {sample}")


def test_too_many_pixels_are_named_in_fit_predict_and_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_files(tmp_path, turned_png)
    big = tmp_path / "1" / "big.png"
    Image.new("RGB", (20, 12), (9, 9, 9)).save(big)  # 240 pixels; the others have 192
    words = f"{big}: 12x20 pixels (240) is over the limit of 200 (data.max_pixels)"
    datamodule = ImageDataModule(
        root=tmp_path, predict_root=tmp_path, cache_dir=None, max_pixels=200
    )
    (finding,) = [f for f in datamodule.prepared.findings if f.check == "unreadable_image"]
    assert finding.subject == str(big) and finding.action == "drop"
    assert finding.message.startswith("12x20 pixels (240) is over the limit of 200")
    assert "1/big.png" not in datamodule.prepared.ids
    _, ids = datamodule.read_predict_inputs()
    assert "1/big.png" not in ids and f"Skipped {words}" in capsys.readouterr().out
    with pytest.raises(InputError, match=r"^big\.png: 12x20 pixels \(240\) is over"):
        datamodule.convert_inputs([("big.png", big.read_bytes())])
