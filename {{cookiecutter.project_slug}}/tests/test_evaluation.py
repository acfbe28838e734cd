"""Evaluation beyond accuracy: the per-class table, the ECE and the files a test run writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from {{ cookiecutter.package_name }}.callbacks import TestReports
from {{ cookiecutter.package_name }}.evaluation import (
    PER_CLASS_COLUMNS,
    CalibrationBins,
    MacroF1,
    Top1Accuracy,
    WeightedMean,
    expected_calibration_error,
    per_class_table,
)
from {{ cookiecutter.package_name }}.reports import reliability_figure

from .conftest import CONFIG, NO_LOGGER, newest_output, run

# Rows are true classes, columns predicted ones; "c" is never predicted right.
MATRIX = torch.tensor([[3, 1, 0], [0, 2, 2], [1, 0, 0]])


def labels_of(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One (prediction, target) pair per count of the matrix."""
    classes = torch.arange(len(matrix))
    preds = torch.cat([classes.repeat_interleave(row) for row in matrix])
    return preds, classes.repeat_interleave(matrix.sum(dim=1))


def test_per_class_table_of_a_hand_made_confusion_matrix() -> None:
    rows = per_class_table(MATRIX, ["a", "b", "c"])
    assert [row["class"] for row in rows] == ["a", "b", "c"]
    assert [row["support"] for row in rows] == [4, 4, 1]
    assert [row["precision"] for row in rows] == pytest.approx([3 / 4, 2 / 3, 0])
    assert [row["recall"] for row in rows] == pytest.approx([3 / 4, 1 / 2, 0])
    assert [row["f1"] for row in rows] == pytest.approx([3 / 4, 4 / 7, 0])


def test_per_class_table_agrees_with_torchmetrics() -> None:
    preds, target = labels_of(MATRIX)
    rows = per_class_table(MATRIX, ["a", "b", "c"])
    for key, metric in [
        ("precision", MulticlassPrecision), ("recall", MulticlassRecall), ("f1", MulticlassF1Score)
    ]:  # fmt: skip
        expected = metric(3, average=None)(preds, target)
        assert [row[key] for row in rows] == pytest.approx(expected.tolist())


def calibrated_logits(confidence: float, correct: int, total: int) -> tuple[torch.Tensor, ...]:
    """``total`` two-class predictions of class 0 at ``confidence``, ``correct`` of them right."""
    logits = torch.tensor([confidence, 1 - confidence]).log().expand(total, 2)
    target = torch.tensor([0] * correct + [1] * (total - correct))
    return logits, target


def ece_of(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """This project's ECE (batch by batch, as in ``test``) and torchmetrics' on the same data."""
    bins, reference = CalibrationBins(n_bins=15), MulticlassCalibrationError(2, n_bins=15)
    for logits, target in batches:
        bins.update(logits, target)
        reference.update(logits, target)
    return float(expected_calibration_error(bins.compute())), float(reference.compute())


def test_weighted_mean_of_batch_losses_is_the_mean_over_samples() -> None:
    losses = torch.tensor([0.5, 2.0, 1.0]), torch.tensor([64.0, 64.0, 11.0])
    mean = WeightedMean()
    for loss, weight in zip(*losses, strict=True):
        mean.update(loss, weight)
    assert mean.compute().item() == pytest.approx((0.5 * 64 + 2.0 * 64 + 11.0) / 139)


def test_top1_accuracy_equals_torchmetrics_over_uneven_batches() -> None:
    torch.manual_seed(0)
    ours, reference = Top1Accuracy(), MulticlassAccuracy(5, average="micro")
    for size in (7, 64, 1):
        logits, target = torch.randn(size, 5), torch.randint(0, 5, (size,))
        ours.update(logits, target)
        reference.update(logits, target)
    assert ours.compute().item() == pytest.approx(reference.compute().item())
    assert 0 < ours.compute().item() < 1


def test_macro_f1_of_perfect_predictions_is_one_and_otherwise_torchmetrics() -> None:
    """torchmetrics sums ten shares of 0.1 in float32: 1.0000001 for perfect predictions."""
    target = torch.arange(10).repeat(5)
    assert MacroF1(10)(target, target).item() == 1.0
    torch.manual_seed(0)
    logits, target = torch.randn(64, 10), torch.randint(0, 10, (64,))
    reference = MulticlassF1Score(10, average="macro")(logits, target).item()
    assert MacroF1(10)(logits, target).item() == pytest.approx(reference) and reference < 1


def test_ece_of_calibrated_predictions_is_zero() -> None:
    ours, theirs = ece_of([calibrated_logits(0.6, 6, 10), calibrated_logits(0.9, 9, 10)])
    assert ours == pytest.approx(0, abs=1e-6)
    assert ours == pytest.approx(theirs, abs=1e-6)


def test_ece_of_over_confident_predictions_matches_torchmetrics() -> None:
    ours, theirs = ece_of([calibrated_logits(0.95, 6, 10), calibrated_logits(0.8, 5, 10)])
    assert ours == pytest.approx((0.35 + 0.3) / 2, abs=1e-5)
    assert ours == pytest.approx(theirs, abs=1e-6)


def test_ece_matches_torchmetrics_on_random_logits_with_certain_predictions() -> None:
    """Confidence exactly 1 falls outside torchmetrics' last bin; the bins keep it apart too."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        logits = 3 * torch.randn(64, 2, generator=generator)
        logits[:5] = torch.tensor([100.0, 0.0])
        batches.append((logits, torch.randint(0, 2, (64,), generator=generator)))
    ours, theirs = ece_of(batches)
    assert ours == pytest.approx(theirs, abs=1e-6)


def test_reliability_figure_shows_one_bar_per_filled_bin() -> None:
    bins = CalibrationBins(n_bins=15)
    bins.update(*calibrated_logits(0.95, 6, 10))
    bins.update(torch.tensor([[100.0, 0.0]]), torch.tensor([0]))  # confidence 1: the last bar
    figure = reliability_figure(bins.compute(), 0.3)
    axes = figure.axes[0]
    assert len(axes.patches) == 1
    assert "0.3000" in axes.get_title()


def test_a_test_run_writes_the_per_class_table_and_calibration(fitted) -> None:
    run_dir = fitted.run_dir
    with (run_dir / "per_class_metrics.csv").open() as file:
        reader = csv.DictReader(file)
        rows = list(reader)
    assert tuple(reader.fieldnames) == PER_CLASS_COLUMNS
    assert [row["class"] for row in rows] == list(fitted.datamodule.class_names)
    assert sum(int(row["support"]) for row in rows) == int(fitted.model.confusion_matrix.sum())
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    assert 0 <= metrics["test/ece"] <= 1
    assert (run_dir / "plots" / "reliability.png").stat().st_size > 0


def test_later_tests_and_predictions_write_their_own_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The fit's reports stay; each later command's go to ``outputs/``, and it says where."""
    fitted = run("fit", tmp_path, *NO_LOGGER, "--trainer.max_epochs=1")
    fit_metrics = (fitted.run_dir / "test_metrics.json").read_text()
    best = f"--ckpt_path={fitted.trainer.checkpoint_callback.best_model_path}"
    saved = fitted.run_dir / "config.yaml"  # names the fit's folders: later commands keep out
    for subcommand, config in [("test", CONFIG), ("test", saved), ("predict", CONFIG)] * 2:
        run(subcommand, tmp_path, *NO_LOGGER, best, "--trainer.limit_test_batches=1", config=config)
    assert (fitted.run_dir / "test_metrics.json").read_text() == fit_metrics
    assert not (fitted.run_dir / "predictions.csv").exists()
    outputs = sorted(p.name.rsplit("-", 2)[0] for p in (fitted.run_dir / "outputs").iterdir())
    assert outputs.count("test") >= 4 and outputs.count("predict") >= 2
    tested = newest_output(fitted.run_dir, "test_metrics.json").parent
    assert (tested / "plots" / "confusion_matrix.png").is_file()
    printed = capsys.readouterr().out
    assert f"Test reports: {tested.resolve()}" in printed
    predicted = newest_output(fitted.run_dir, "predictions.csv")
    assert f"Predictions: {predicted}" in printed


def test_trainer_test_from_python_writes_the_reports(fitted, tmp_path: Path) -> None:
    trainer = L.Trainer(
        default_root_dir=tmp_path, callbacks=[TestReports()], logger=False,
        enable_progress_bar=False, limit_test_batches=2,
    )  # fmt: skip
    trainer.test(fitted.model, datamodule=fitted.datamodule)
    assert "test/acc" in json.loads((tmp_path / "test_metrics.json").read_text())
    assert (tmp_path / "per_class_metrics.csv").is_file()


def test_predict_without_new_inputs_says_which_split_it_predicts(
    fitted, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    best = f"--ckpt_path={fitted.trainer.checkpoint_callback.best_model_path}"
    run("predict", tmp_path, *NO_LOGGER, best)
    tested = fitted.datamodule.prepared.splits.count("test")
    assert f"No new inputs given: predicting the test split ({tested} samples)" in caplog.text
