"""Attributions: what Integrated Gradients promises holds for this model and its raw inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from {{ cookiecutter.package_name }}.attribution import attribute, explain, first_test_samples
from {{ cookiecutter.package_name }}.system import Classifier

from .conftest import NO_LOGGER, datamodule_class, run

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]


def is_table(datamodule) -> bool:
    return hasattr(datamodule, "feature_names")


tables_only = pytest.mark.skipif(not is_table(datamodule_class()), reason="ranks table features")


def target_logits(model: Classifier, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x.to(model.device)).cpu().gather(1, target[:, None])[:, 0]


def test_attributes_the_logits_the_model_gives_raw_inputs(fitted) -> None:
    """uint8 pixels are scaled as Standardize scales them: the same logits, the same class."""
    x, _ = first_test_samples(fitted.datamodule, 8)
    result = attribute(fitted.model, x)
    assert result.inputs.dtype == torch.float32 and result.attributions.shape == x.shape
    fitted.model.eval()
    with torch.no_grad():
        raw, converted = fitted.model(x), fitted.model(result.inputs)
    torch.testing.assert_close(converted, raw)
    assert torch.equal(result.predicted, raw.argmax(dim=1))
    mean = fitted.model.standardize.mean.expand_as(result.inputs)
    torch.testing.assert_close(result.baselines, mean)


def test_completeness(fitted) -> None:
    """Attributions add up to f(input) - f(baseline) of the predicted class, up to the
    integral's error, which more steps shrink."""
    model = fitted.model
    x, _ = first_test_samples(fitted.datamodule, 8)
    coarse, fine = attribute(model, x, n_steps=8), attribute(model, x, n_steps=128)
    gain = target_logits(model, fine.inputs, fine.predicted) - target_logits(
        model, fine.baselines, fine.predicted
    )
    for result in (coarse, fine):
        total = result.attributions.flatten(1).sum(dim=1)
        torch.testing.assert_close(total - gain, result.delta, atol=1e-4, rtol=1e-4)
    assert fine.delta.abs().max() <= 0.05 * gain.abs().max() + 1e-3
    assert fine.delta.abs().sum() <= coarse.delta.abs().sum() + 1e-4


def test_a_linear_model_gets_exact_attributions(fitted) -> None:
    """For logits w . standardised(x), IG gives w * (x - mean) / std per input, exactly."""
    datamodule = fitted.datamodule
    shape, classes = datamodule.input_shape, datamodule.num_classes

    def linear(input_shape, num_classes) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes))

    torch.manual_seed(0)
    model = Classifier(linear, classes, shape)
    model.standardize.fit(*datamodule.train_statistics())
    x, _ = first_test_samples(datamodule, 6)
    result = attribute(model, x, n_steps=4)
    weights = model.network[1].weight.detach()[result.predicted].reshape(result.inputs.shape)
    scale = model.standardize.std + model.standardize.eps
    expected = weights * (result.inputs - model.standardize.mean) / scale
    torch.testing.assert_close(result.attributions, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False])
def test_the_model_is_left_as_it_was(fitted, device: str, training: bool) -> None:
    model = fitted.model.to(device)
    was_training = model.training
    model.train(training)
    modes = [m.training for m in model.modules()]
    model.zero_grad(set_to_none=True)
    try:
        result = attribute(model, first_test_samples(fitted.datamodule, 4)[0])
        assert [m.training for m in model.modules()] == modes
        assert model.device.type == device
        assert all(p.grad is None and p.requires_grad for p in model.parameters())
        assert result.attributions.device.type == "cpu"
        assert torch.isfinite(result.attributions).all()
    finally:
        model.to("cpu").train(was_training)


def test_explain_writes_its_files(fitted, tmp_path: Path, capsys) -> None:
    written = explain(fitted.model, fitted.datamodule, tmp_path, samples=5)
    plot = tmp_path / "plots" / "attributions.png"
    assert plot in written
    assert all(path.stat().st_size > 0 for path in written)
    assert plot.read_bytes().startswith(b"\x89PNG")
    out = capsys.readouterr().out
    assert f"Attributions (integrated gradients, 5 test samples): {written[0]}" in out
    if not is_table(fitted.datamodule):
        assert written == [plot]
        return
    table = tmp_path / "feature_attributions.csv"
    assert written == [table, plot]
    rows = list(csv.DictReader(table.open()))
    assert list(rows[0]) == ["feature", "mean_abs_attribution", "mean_attribution"]
    assert sorted(row["feature"] for row in rows) == sorted(fitted.datamodule.feature_names)
    ranked = [float(row["mean_abs_attribution"]) for row in rows]
    assert ranked == sorted(ranked, reverse=True) and ranked[0] > 0
    assert rows[0]["feature"] in out


@tables_only
def test_a_trained_model_ranks_the_only_informative_feature_first(tmp_path: Path) -> None:
    """The label depends on one column; the rest are noise, one of them categorical."""
    rng = np.random.default_rng(0)
    rows = 600
    table = pd.DataFrame({f"noise_{i}": rng.normal(size=rows) for i in range(5)})
    table["colour"] = rng.choice(["red", "green", "blue"], size=rows)
    table["signal"] = rng.normal(size=rows)
    # Noisy enough that the leak check (one column predicting the label alone) lets it be.
    label = table["signal"] + 0.5 * rng.normal(size=rows) > 0
    table["label"] = np.where(label, "yes", "no")
    path = tmp_path / "table.csv"
    table.to_csv(path, index=False)
    cli = run(
        "fit", tmp_path / "runs", *NO_LOGGER, f"--data.path={path}", "--data.target=label",
        "--trainer.max_epochs=15", "--trainer.limit_train_batches=1.0", "--trainer.callbacks=[]",
    )  # fmt: skip
    explain(cli.model, cli.datamodule, tmp_path / "explained", samples=64)
    ranking = list(csv.DictReader((tmp_path / "explained" / "feature_attributions.csv").open()))
    top, runner_up = (float(row["mean_abs_attribution"]) for row in ranking[:2])
    assert ranking[0]["feature"] == "signal" and top > 3 * runner_up
