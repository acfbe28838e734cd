"""torchvision ResNets, optionally from local pretrained weights and with a frozen backbone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision import models


class ResNet(nn.Module):
    """A torchvision ResNet with its stem and head adapted to the data.

    Pretrained weights come from ``weights_path`` (a local ``state_dict`` file, for machines
    without internet) or ``weights`` (a torchvision enum name such as ``"DEFAULT"``, which
    downloads on first use). The head is always new: it has ``num_classes`` outputs.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        depth: Literal[18, 34, 50] = 18,
        weights: str | None = None,
        weights_path: Path | None = None,
        freeze_backbone: bool = False,  # train only the head: fine-tuning on little data
        small_input: bool | None = None,
    ) -> None:
        """
        Args:
            freeze_backbone: Train only the new layers (head, and a stem made for the data);
                the frozen layers' BatchNorm statistics stay as they were trained too.
            small_input: A 3x3 stride-1 stem and no max-pool, which keeps detail in small
                images; None: for networks trained from scratch, while pretrained weights
                keep the stem they were trained with.
        """
        super().__init__()
        pretrained = weights is not None or weights_path is not None
        small_input = not pretrained if small_input is None else small_input
        builder = {18: models.resnet18, 34: models.resnet34, 50: models.resnet50}[depth]
        self.net = builder(weights=weights)
        if weights_path is not None:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, unexpected = self.net.load_state_dict(state, strict=False)
            if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
                raise ValueError(
                    f"{weights_path} does not hold resnet{depth} weights: "
                    f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
                )
        # Frozen BatchNorm layers are kept in eval mode (see train): their statistics belong
        # to the frozen weights. A plain list, so they are not registered twice.
        self.frozen_norms: list[nn.Module] = []
        if freeze_backbone:
            for parameter in self.net.parameters():
                parameter.requires_grad = False
            self.frozen_norms = [m for m in self.net.modules() if isinstance(m, nn.BatchNorm2d)]
        # Layers replaced after freezing stay trainable: a new stem and the head.
        self.net.conv1 = self._adapt_stem(self.net.conv1, input_shape[0], small_input)
        if small_input:
            self.net.maxpool = nn.Identity()
        self.net.fc = nn.Linear(self.net.fc.in_features, num_classes)

    @staticmethod
    def _adapt_stem(conv: nn.Conv2d, in_channels: int, small_input: bool) -> nn.Conv2d:
        """A stem for ``in_channels``; pretrained RGB filters are averaged for grey images."""
        if in_channels == conv.in_channels and not small_input:
            return conv
        kernel, stride, padding = (3, 1, 1) if small_input else (7, 2, 3)
        stem = nn.Conv2d(in_channels, conv.out_channels, kernel, stride, padding, bias=False)
        if not small_input:
            with torch.no_grad():
                mean_filter = conv.weight.mean(dim=1, keepdim=True)
                stem.weight.copy_(mean_filter.repeat(1, in_channels, 1, 1))
        return stem

    def train(self, mode: bool = True) -> ResNet:
        super().train(mode)
        for norm in self.frozen_norms:
            norm.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # N,C,H,W -> N,num_classes
