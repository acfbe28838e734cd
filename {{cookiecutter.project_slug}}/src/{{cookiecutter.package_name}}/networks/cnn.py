"""A small convolutional network for small images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Two conv stages and a linear head; any input size (global average pooling)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        width: int = 32,  # channels of the first stage; the second has twice as many
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_block(input_shape[0], width),
            conv_block(width, width),
            nn.MaxPool2d(2),  # H,W -> H/2,W/2
            conv_block(width, 2 * width),
            conv_block(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1),  # -> N,2*width,1,1
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # N,C,H,W -> N,num_classes
