"""The decision: offsets fitted on validation for macro-F1, saved with each checkpoint, and
the class that test, predict and export name from them."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import torch

from {{ cookiecutter.package_name }}.decision import decide, fit_offsets, macro_f1

from .conftest import NO_LOGGER, newest_output, run


def rare_class_logits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """950 common and 50 rare samples, the rare ones scored higher for their class than the
    common ones but never above the common class: the argmax never names them."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.cat([torch.zeros(950, dtype=torch.long), torch.ones(50, dtype=torch.long)])
    rare_score = torch.where(target == 1, -1.0, -3.0) + 0.5 * torch.randn(1000, generator=generator)
    return torch.stack([torch.zeros(1000), rare_score.clamp(max=-0.01)], dim=1), target


def test_offsets_name_a_class_the_argmax_never_names() -> None:
    logits, target = rare_class_logits()
    assert macro_f1(logits.argmax(dim=1), target, 2) < 0.5  # the rare class: F1 0
    offsets = fit_offsets(logits, target)
    decided = decide(logits.softmax(dim=1), offsets)
    assert offsets[0] == 0 and offsets[1] > 0
    assert macro_f1(decided, target, 2) > 0.8
    held_out, truth = rare_class_logits(seed=1)  # the same offsets on other samples
    assert macro_f1(decide(held_out.softmax(dim=1), offsets), truth, 2) > 0.8


def test_a_decision_the_argmax_gets_right_keeps_the_argmax() -> None:
    target = torch.arange(5).repeat(20)
    logits = torch.nn.functional.one_hot(target, 5).float() * 3
    assert torch.equal(fit_offsets(logits, target), torch.zeros(5))


def test_a_fitted_decision_travels_with_the_checkpoint(tmp_path: Path) -> None:
    """``model.decision f1_macro``: the best checkpoint holds the offsets fitted on its own
    validation logits, and predict names each sample's class from them."""
    fit = run("fit", tmp_path, *NO_LOGGER, "--run.name=decided", "--model.decision=f1_macro")
    best = fit.trainer.checkpoint_callback.best_model_path
    model = type(fit.model).load_from_checkpoint(best, map_location="cpu").eval()
    batches = list(itertools.islice(fit.datamodule.val_dataloader(), fit.trainer.limit_val_batches))
    with torch.no_grad():
        logits = torch.cat([model(x) for x, *_ in batches])
    target = torch.cat([y for _, y, *_ in batches])
    assert torch.equal(model.decision_offsets, fit_offsets(logits, target))

    run("predict", tmp_path, *NO_LOGGER, f"--ckpt_path={best}")
    rows = list(csv.DictReader(newest_output(fit.run_dir, "predictions.csv").open()))
    names = fit.datamodule.class_names
    probabilities = torch.tensor([[float(row[name]) for name in names] for row in rows])
    decided = decide(probabilities, model.decision_offsets)
    assert [row["predicted"] for row in rows] == [names[c] for c in decided]


def test_a_checkpoint_from_before_decisions_decides_by_the_argmax(fitted, tmp_path: Path) -> None:
    checkpoint = torch.load(fitted.trainer.checkpoint_callback.best_model_path, weights_only=False)
    del checkpoint["state_dict"]["decision_offsets"]
    older = tmp_path / "older.ckpt"
    torch.save(checkpoint, older)
    model = type(fitted.model).load_from_checkpoint(older, map_location="cpu")
    assert torch.equal(model.decision_offsets, torch.zeros(fitted.datamodule.num_classes))
