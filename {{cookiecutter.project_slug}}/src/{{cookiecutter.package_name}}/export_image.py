"""What an exported image model takes: decoded 8-bit RGB pixels of any size. Inside the graph
they become what ``to_pixels`` makes of a file in training and ``predict``: the model's mode
(greyscale by Pillow's own integer weights), then its size by the same ``resize_pixels``. A
consumer decodes (any decoder, upright, RGB) and does nothing else."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from .data.image_decoding import png_bytes, read_image, resize_pixels

# Pillow's convert("L"): (R * 19595 + G * 38470 + B * 7471 + 2**15) >> 16, exactly.
GREY_WEIGHTS = (19595, 38470, 7471)


class ImageInputs(nn.Module):
    """(N, 3, H, W) ``uint8`` RGB pixels, any H and W, as the model's (N, C, h, w) input."""

    def __init__(self, channels: int, size: Sequence[int]) -> None:
        super().__init__()
        self.channels, self.size = channels, (int(size[0]), int(size[1]))
        self.register_buffer("weights", torch.tensor(GREY_WEIGHTS, dtype=torch.int32))

    def forward(self, pixels: Tensor) -> Tensor:
        if self.channels == 1:
            weighted = pixels.to(torch.int32) * self.weights.view(1, 3, 1, 1)
            pixels = ((weighted.sum(dim=1, keepdim=True) + 2**15) // 2**16).to(torch.uint8)
        return resize_pixels(pixels, self.size)


class ImageExport:
    """The raw-input side of an image model's export (``export.RawInputs``)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.input_names = ["pixels"]
        self.channels, *self.size = state["input_shape"]
        self.module = ImageInputs(self.channels, self.size)

    def example(self) -> Tensor:
        # A size unlike the model's, and height unlike width, so neither is taken as fixed.
        height, width = self.size
        return torch.zeros(2, 3, height + 1, width + 2, dtype=torch.uint8)

    def dynamic_shapes(self) -> dict[int, Any]:
        dim = torch.export.Dim
        return {0: dim("batch", min=1), 2: dim("height", min=1), 3: dim("width", min=1)}

    def with_probes(self, files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """``files`` and, for the first eight, a larger colour copy and a smaller one: sizes
        the model never saw, resized inside the graph (and turned grey there when the model
        is greyscale)."""
        probes = []
        for name, content in files[:8]:
            image = np.asarray(read_image(io.BytesIO(content), name).convert("RGB"))
            height, width = image.shape[:2]
            tinted = np.stack([image[..., 0], 255 - image[..., 1], image[..., 2] // 2], axis=-1)
            for tag, pixels, size in (
                ("larger", tinted, (2 * width + 1, 2 * height + 3)),
                ("smaller", image, (max(1, width * 3 // 4), max(1, height * 3 // 4 + 1))),
            ):
                resized = Image.fromarray(pixels).resize(size, Image.Resampling.NEAREST)
                probes.append((f"{name}.{tag}.png", png_bytes(resized)))
        return [*files, *probes]

    def feeds(self, files: list[tuple[str, bytes]]) -> list[tuple[list[int], Any, Any]]:
        """The exported models' inputs for ``files``: one batch per decoded size, as
        (positions in ``files``, ONNX feed, ``.pt2`` input)."""
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        decoded = []
        for i, (name, content) in enumerate(files):
            pixels = np.asarray(read_image(io.BytesIO(content), name).convert("RGB"))
            decoded.append(pixels.transpose(2, 0, 1))
            by_size[pixels.shape[:2]].append(i)
        batches = []
        for rows in by_size.values():
            pixels = np.ascontiguousarray(np.stack([decoded[i] for i in rows]))
            batches.append((rows, {"pixels": pixels}, torch.from_numpy(pixels)))
        return batches

    def finish_onnx(self, model: Any) -> Any:
        return model

    def describe(self) -> dict[str, Any]:
        height, width = self.size
        return {
            "pixels": {
                "dtype": "uint8", "shape": ["batch", 3, "height", "width"], "layout": "NCHW",
                "values": "decoded 8-bit RGB pixels, upright (EXIF orientation applied), any "
                "height and width (one size per batch); the model converts them to its "
                f"mode ({'L' if self.channels == 1 else 'RGB'}) and resizes them to "
                f"{height} x {width} (bilinear, antialiased) as training did",
            }
        }  # fmt: skip
