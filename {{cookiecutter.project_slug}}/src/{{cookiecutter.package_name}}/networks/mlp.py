"""A multilayer perceptron for tables."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """Fully connected layers with ReLU and dropout."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (64, 32),
        dropout: float = 0.1,  # small tables overfit fast; raise it before adding layers
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = 1
        for size in input_shape:
            width *= size
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)  # N,F -> N,num_classes
