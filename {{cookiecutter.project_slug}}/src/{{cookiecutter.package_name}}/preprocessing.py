"""Preprocessing that travels with the model, so training and serving can't drift apart."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Standardize(nn.Module):
    """``(x - mean) / std`` with statistics stored as buffers, hence in every checkpoint and export.

    The statistics are fitted on the training split only (see the data module's
    ``train_statistics``); until then the layer is the identity. ``uint8`` pixels are scaled
    to [0, 1] first: loaders move a quarter of the bytes, and a served model takes decoded
    pixels as they are.
    """

    def __init__(self, input_shape: Sequence[int], eps: float = 1e-6) -> None:
        super().__init__()
        # One value per channel (images: C,1,1) or per feature (tables: F,).
        shape = (input_shape[0],) + (1,) * (len(input_shape) - 1)
        self.eps = eps
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def fit(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean.reshape(self.mean.shape))
        self.std.copy_(std.reshape(self.std.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255
        return (x - self.mean) / (self.std + self.eps)
