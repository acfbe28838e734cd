"""How an image becomes the model's pixels: one decoding for fit, profile, predict and serve.

``open_image`` reads a file's header in a format the model takes; ``decode`` refuses an image
whose header names more pixels than ``max_pixels`` before a byte of it is decoded, turns it
upright by its EXIF orientation (phones store photos sideways and say so there), and reads it
as 8 bits a channel: 16-bit values by their top byte, transparent pixels over white, every
other mode as greyscale or RGB, or refused by name. Pillow's ``convert("RGB")`` alone clips
16-bit values to white and ignores the orientation. ``to_pixels`` then makes the model's
input of it, resized by ``resize_pixels``: the same tensor operations run inside an exported
model, so a consumer's pixels meet the resize training used. Whatever fails is an
``InputError`` naming the file and what to do.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .base import InputError

FORMATS = ("JPEG", "PNG", "WEBP", "BMP")  # of the training files' suffixes (image_sources)
# 8192 x 8192: a 48-megapixel phone photo passes; decoding takes 3-4 bytes a pixel, ~270 MB
# at the limit, while a 500 KB PNG can claim 13,000 x 13,000 (680 MB decoded).
MAX_PIXELS = 8192 * 8192
# Our limit replaces Pillow's process-wide one (a warning at 89 M pixels, an error at 179 M):
# every image the project decodes passes ``decode``, which names the file and the setting.
Image.MAX_IMAGE_PIXELS = None
BACKGROUND = (255, 255, 255)  # under transparent pixels: white, as a viewer shows them
MODES = {1: "L", 3: "RGB"}  # the model's input by channels
GREY = {"1", "L"}
COLOUR = {"RGB", "RGBX", "P", "CMYK", "YCbCr"}  # Pillow converts these to RGB faithfully
ALPHA = {"LA", "PA", "RGBA", "RGBa"}
SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}
LOW_BIT_GREY = {"1": 255, "L;2": 85, "L;4": 17}  # PNG greyscale Pillow scales: 8-bit step
ORIENTATION = 0x0112  # the EXIF tag; values 5-8 turn the image by a quarter
ROUNDING = 0.5 + 2**-10  # resize_pixels: half up, with ties clear of float noise (~1e-5)


def open_image(file: Path | IO[bytes], subject: str) -> Image.Image:
    """The image's header (pixels are decoded by ``decode``), in a format the model takes."""
    try:
        return Image.open(file, formats=FORMATS)
    except Image.UnidentifiedImageError as error:
        names = ", ".join(FORMATS)
        message = f"{subject}: not an image in a format the model takes ({names})"
        raise InputError(message) from error
    except Exception as error:  # a header cut short or unreadable
        raise undecodable(subject, error) from error


def decode(image: Image.Image, subject: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """``image`` upright, as 8-bit greyscale (L) or RGB; an InputError says why not."""
    check_pixels(image.size, subject, max_pixels)
    rawmode = png_rawmode(image)  # before load(), which forgets it
    try:
        image.load()
        key_in_8_bits(image, rawmode, subject)
        ImageOps.exif_transpose(image, in_place=True)
        return eight_bit(image, subject)
    except InputError:
        raise
    except Exception as error:  # truncated or corrupt: the header opens, the pixels don't
        raise undecodable(subject, error) from error


def read_image(file: Path | IO[bytes], subject: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A file decoded by ``decode``; the file is closed when this returns."""
    with open_image(file, subject) as image:
        return decode(image, subject, max_pixels)


def check_pixels(size: tuple[int, int], subject: str, max_pixels: int) -> None:
    """Refuses from the header: decoding would take 3-4 bytes for each of these pixels."""
    width, height = size
    if width * height > max_pixels:
        raise InputError(
            f"{subject}: {height}x{width} pixels ({width * height:,}) is over the limit of "
            f"{max_pixels:,} (data.max_pixels), refused before decoding: shrink the image, or "
            "raise data.max_pixels if images this large are expected"
        )


def png_rawmode(image: Image.Image) -> str | None:
    """How a PNG's pixels are stored (e.g. ``L;2``: 2-bit greyscale), before decoding."""
    args = image.tile[0][3] if image.format == "PNG" and image.tile else None
    return args if isinstance(args, str) or args is None else args[0]


def key_in_8_bits(image: Image.Image, rawmode: str | None, subject: str) -> None:
    """A PNG's transparent colour (tRNS) in the 8 bits Pillow scaled the pixels to; Pillow
    compares the file's value with the scaled pixels and misses every transparent one."""
    key = image.info.get("transparency")
    if rawmode in LOW_BIT_GREY and isinstance(key, int):
        image.info["transparency"] = key * LOW_BIT_GREY[rawmode]
    elif rawmode == "RGB;16B" and key is not None:  # 8 bits can't tell 16-bit colours apart
        raise InputError(
            f"{subject}: a 16-bit RGB PNG with a transparent colour (tRNS) does not read "
            "faithfully at 8 bits: save it with an alpha channel, or at 8 bits"
        )


def shown_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) once upright, from the header's EXIF orientation where it holds one."""
    # PNG's getexif() decodes the whole image when the header holds no eXIf chunk.
    if image.format == "PNG" and "exif" not in image.info:
        return image.size
    turned = image.getexif().get(ORIENTATION) in (5, 6, 7, 8)
    return image.size[::-1] if turned else image.size


def eight_bit(image: Image.Image, subject: str) -> Image.Image:
    """An upright decoded image as L or RGB, 8 bits a channel."""
    mode = image.mode
    if mode in SIXTEEN_BIT or (mode == "I" and image.format == "PNG"):  # older Pillow: "I"
        return sixteen_bit(image)
    if mode in ALPHA or image.info.get("transparency") is not None:
        return flatten(image.convert("RGBA"), grey=mode in {"1", "L", "LA"})
    if mode in GREY:
        return image if mode == "L" else image.convert("L")
    if mode in COLOUR:
        return image if mode == "RGB" else image.convert("RGB")  # a copy costs 4 bytes a pixel
    raise InputError(
        f"{subject}: {mode} pixels have no 8-bit reading the model can trust (their range "
        "is unknown): save the image as 8- or 16-bit greyscale or RGB (PNG or JPEG)"
    )


def sixteen_bit(image: Image.Image) -> Image.Image:
    """16-bit greyscale by its top byte (value >> 8), a transparent value over white."""
    values = np.asarray(image).astype(np.uint16)  # any byte order, as numbers
    grey = Image.fromarray((values >> 8).astype(np.uint8), mode="L")
    transparent = image.info.get("transparency")
    if not isinstance(transparent, int):
        return grey
    alpha = Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8), mode="L")
    return flatten(Image.merge("LA", (grey, alpha)).convert("RGBA"), grey=True)


def flatten(rgba: Image.Image, grey: bool) -> Image.Image:
    """Transparent pixels over ``BACKGROUND``: what they hide is not what anyone sees."""
    background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    flat = Image.alpha_composite(background, rgba)
    return flat.convert("L" if grey else "RGB")


def to_pixels(image: Image.Image, channels: int, size: tuple[int, int]) -> np.ndarray:
    """A decoded image as ``uint8`` (C, H, W) with ``channels`` channels, resized to ``size``."""
    image = image if image.mode == MODES[channels] else image.convert(MODES[channels])
    pixels = np.asarray(image, dtype=np.uint8)
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    if pixels.shape[1:] == tuple(size):
        return pixels
    writable = torch.from_numpy(np.array(pixels))  # a copy: Pillow's buffer is read-only
    return resize_pixels(writable[None], size)[0].numpy()


def resize_pixels(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``uint8`` (N, C, H, W) pixels at (height, width) ``size``: bilinear, antialiased when
    shrinking, rounded to the nearest level. Torch's operations rather than Pillow's resize
    (which differs by one level in about a sixth of the pixels): the exported graph runs these
    same operations (onnxruntime's antialiased Resize), so training, ``predict``, ``serve``
    and an export's consumer resize alike."""
    x = F.interpolate(pixels.float(), size=tuple(size), mode="bilinear", antialias=True)
    # Rounded half up from a hair below the half: the weights of whole-number scales make
    # exact halves common, and two runtimes' float sums put them a few 1e-5 either side
    # (onnxruntime and torch then disagreed on 0.3 % of the pixels; on none with this).
    return (x + ROUNDING).floor().clamp(0, 255).to(torch.uint8)


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """An image, or ``uint8`` (C, H, W) pixels, as the PNG file ``serve`` would be sent."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image[0] if len(image) == 1 else image.transpose(1, 2, 0))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def undecodable(subject: str, error: Exception) -> InputError:
    return InputError(
        f"{subject}: the image fails to decode ({type(error).__name__}: {error}): the file is "
        "truncated or corrupt; save it again or remove it"
    )
