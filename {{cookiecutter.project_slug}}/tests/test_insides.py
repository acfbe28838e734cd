"""What the network does inside: the pictures and figures are the model's own activations."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from {{ cookiecutter.package_name }}.insides import dead_units, first_conv, relu_layers


def test_a_fit_writes_dead_units_per_layer(fitted) -> None:
    report = json.loads((fitted.run_dir / "network_insides.json").read_text())
    layers = relu_layers(fitted.model.network)
    assert [row["layer"] for row in report["dead_units"]] == list(layers)
    for row in report["dead_units"]:
        assert 0 <= row["dead"] <= row["units"] and row["dead_share"] == row["dead"] / row["units"]
    assert (fitted.run_dir / "plots" / "dead_units.png").stat().st_size > 0


def test_activation_maps_are_the_named_samples_own(fitted) -> None:
    """Each row names a test sample and a layer: that sample through the model, read at that
    layer, has these channels as its most active, with these means."""
    report = json.loads((fitted.run_dir / "network_insides.json").read_text())
    if first_conv(fitted.model.network) is None:
        assert "activation_maps" not in report and "first_layer_filters" not in report
        pytest.skip("no convolution: no maps to draw")
    assert (fitted.run_dir / "plots" / "activation_maps.png").stat().st_size > 0
    assert (fitted.run_dir / "plots" / "first_layer_filters.png").stat().st_size > 0
    model, layers = fitted.model.eval(), relu_layers(fitted.model.network)
    rows = report["activation_maps"]
    assert len({row["layer"] for row in rows}) >= 2 and len({row["sample"] for row in rows}) >= 2
    for row in rows:
        seen: list[torch.Tensor] = []
        hook = layers[row["layer"]].register_forward_hook(
            lambda _m, _i, out, seen=seen: seen.append(out)
        )
        with torch.no_grad():
            model(fitted.datamodule.inputs_of([row["sample"]]))
        hook.remove()
        means = seen[0][0].mean(dim=(1, 2))
        assert row["channels"] == means.argsort(descending=True)[: len(row["channels"])].tolist()
        assert row["means"] == pytest.approx(means[row["channels"]].tolist(), rel=1e-4, abs=1e-6)


def test_planted_dead_units_are_counted(fitted) -> None:
    """Two units of the first ReLU layer made never to fire (zero weights, negative bias in the
    layer before it) are counted dead."""
    model = fitted.model.eval()
    modules = list(model.network.named_modules())
    first = next(i for i, (_, m) in enumerate(modules) if isinstance(m, nn.ReLU))
    before = next(m for _, m in reversed(modules[:first]) if getattr(m, "bias", None) is not None)
    collate = getattr(fitted.datamodule, "collate_fn", None)
    loader = DataLoader(fitted.datamodule.dataset("val"), batch_size=256, collate_fn=collate)
    healthy = dead_units(model, loader)
    kept = before.weight[:2].clone(), before.bias[:2].clone()
    try:
        with torch.no_grad():
            before.weight[:2], before.bias[:2] = 0, -1
        planted = dead_units(model, loader)
    finally:
        with torch.no_grad():  # the shared fit's model, as the other tests read it
            before.weight[:2], before.bias[:2] = kept
    assert planted[0]["dead"] >= max(2, healthy[0]["dead"])
