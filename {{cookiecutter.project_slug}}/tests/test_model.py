"""The system: shapes, learning, preprocessing saved with the weights, optimisation from config."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

from {{ cookiecutter.package_name }}.schedulers import OneCycle, Plateau, WarmupCosine
from {{ cookiecutter.package_name }}.system import Classifier, cross_entropy

from .conftest import LOGGERS, NO_LOGGER, logged, run


def test_forward_shape_and_probabilities(fitted) -> None:
    x, _ = next(iter(fitted.datamodule.val_dataloader()))
    fitted.model.eval()
    assert fitted.model(x).shape == (len(x), fitted.datamodule.num_classes)
    probabilities = fitted.model.predict_step(x, 0)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(len(x)))


def test_one_step_lowers_the_loss(fitted) -> None:
    model, (x, y) = fitted.model, next(iter(fitted.datamodule.train_dataloader()))
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    def loss() -> torch.Tensor:
        torch.manual_seed(0)  # the same dropout mask before and after the step
        return torch.nn.functional.cross_entropy(model(x), y)

    before = loss()
    before.backward()
    optimizer.step()
    assert loss().item() < before.item()


def test_overfits_one_batch(tmp_path) -> None:
    """Enough capacity and a working optimiser: one repeated batch is learned by heart."""
    cli = run(
        "fit", tmp_path, f"--trainer.logger={LOGGERS / 'csv.yaml'}", "--trainer.callbacks=[]",
        "--trainer.overfit_batches=1", "--trainer.max_epochs=100", "--trainer.limit_val_batches=0",
        "--model.label_smoothing=0", "--model.lr_scheduler=null", "--model.lr=0.003",
    )  # fmt: skip
    losses = logged(cli, "train/loss")
    assert len(losses) == 100
    assert sum(losses[-5:]) / 5 < min(0.1, losses[0] / 10)


def test_standardisation_is_fitted_on_train_and_saved(fitted) -> None:
    mean, std = fitted.datamodule.train_statistics()
    # Not checkpoint_callback.last_model_path: testing the best checkpoint restores the
    # callback's state as it was then, when last.ckpt may not have existed yet.
    checkpoint = torch.load(fitted.run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    torch.testing.assert_close(
        checkpoint["state_dict"]["standardize.mean"].flatten(), mean.flatten()
    )
    torch.testing.assert_close(checkpoint["state_dict"]["standardize.std"].flatten(), std.flatten())


def test_one_cycle_steps_every_batch_and_peaks_at_lr(fitted) -> None:
    scheduler = fitted.trainer.lr_scheduler_configs[0]
    assert isinstance(scheduler.scheduler, OneCycle) and scheduler.interval == "step"
    assert scheduler.scheduler.total_steps == fitted.trainer.estimated_stepping_batches
    assert scheduler.scheduler.last_epoch == fitted.trainer.global_step
    peak = max(group["max_lr"] for group in scheduler.scheduler.optimizer.param_groups)
    assert peak == fitted.model.lr


def test_optimizer_and_scheduler_come_from_config(tmp_path) -> None:
    cli = run(
        "fit", tmp_path, *NO_LOGGER,
        "--model.optimizer=torch.optim.SGD", "--model.optimizer.momentum=0.9",
        "--model.lr_scheduler={{ cookiecutter.package_name }}.schedulers.Plateau",
    )  # fmt: skip
    config = cli.trainer.lr_scheduler_configs[0]
    assert isinstance(cli.trainer.optimizers[0], torch.optim.SGD)
    assert cli.trainer.optimizers[0].param_groups[0]["momentum"] == 0.9
    assert isinstance(config.scheduler, Plateau | ReduceLROnPlateau)
    assert (config.interval, config.monitor) == ("epoch", "val/loss")


def test_warmup_cosine_shape() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupCosine(optimizer, total_steps=100, warmup_fraction=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] < lrs[5] < lrs[9] and max(lrs) == 1.0
    assert lrs[-1] < 0.01 and all(a >= b for a, b in itertools.pairwise(lrs[10:]))


def test_compiled_model_trains_and_keeps_plain_checkpoint_names(tmp_path, monkeypatch) -> None:
    """``torch.compile`` as a config switch. The graph is captured and traced as Inductor
    gets it (what our code can break), then run by AOTAutograd's eager backend: Inductor's
    C++ code generation, torch's own to test, costs a minute of two CPU cores."""
    compile_as_configured = torch.compile

    def traced(function, **options):
        return compile_as_configured(function, **options, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", traced)
    cli = run("fit", tmp_path, *NO_LOGGER, "--model.compile=true", "--trainer.max_epochs=1")
    model, (x, y) = cli.model.eval(), next(iter(cli.datamodule.val_dataloader()))
    assert model.score is not Classifier.logits_and_loss
    with torch.no_grad():  # the compiled function computes what the plain one does
        compiled = model.score(model, x, y, None)
        torch.testing.assert_close(compiled, Classifier.logits_and_loss(model, x, y, None))
    assert cli.trainer.global_step == 4
    checkpoint = torch.load(cli.run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])


def test_fused_optimizer_clips_under_bf16(tmp_path) -> None:
    """Lightning alone refuses to clip for fused optimizers under mixed precision."""
    cli = run(
        "fit", tmp_path, *NO_LOGGER, "--trainer.precision=bf16-mixed", "--trainer.max_epochs=1",
        "--model.optimizer.init_args.fused=true", "--trainer.gradient_clip_val=1e-6",
    )  # fmt: skip
    optimizer = cli.trainer.optimizers[0]
    assert optimizer.defaults["fused"] and cli.trainer.global_step == 4
    for parameter in cli.model.parameters():
        parameter.grad = torch.full_like(parameter, 100.0)
    cli.model.configure_gradient_clipping(optimizer, 1e-6, "norm")
    norms = [p.grad.norm() for p in cli.model.parameters()]
    assert float(torch.stack(norms).norm()) == pytest.approx(1e-6, rel=0.01)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_equals_torch_cross_entropy_with_weights_and_smoothing(smoothing: float) -> None:
    torch.manual_seed(0)
    logits, target, weight = torch.randn(64, 5), torch.randint(0, 5, (64,)), torch.rand(5) + 0.5
    expected = torch.nn.functional.cross_entropy(
        logits, target, weight=weight, label_smoothing=smoothing
    )
    torch.testing.assert_close(cross_entropy(logits, target, weight, smoothing), expected)


def test_the_loss_is_weighted_only_when_the_class_weights_differ(fitted) -> None:
    model = fitted.model
    x, y = next(iter(fitted.datamodule.val_dataloader()))
    smoothing = model.hparams.label_smoothing
    weights = torch.linspace(0.5, 2.0, model.hparams.num_classes)
    for loaded, weighted in ((torch.ones_like(weights), False), (weights, True)):
        model.class_weights.copy_(loaded)
        model.on_fit_start()  # after a checkpoint's weights are restored
        assert model.weighted_loss is weighted
        loss, logits = model._step((x, y), model.val_metrics.clone())
        expected = torch.nn.functional.cross_entropy(
            logits, y, weight=loaded, label_smoothing=smoothing
        )
        torch.testing.assert_close(loss, expected)
    model.class_weights.fill_(1.0)
    model.on_fit_start()


@pytest.mark.parametrize("schedule", [None, Plateau])
def test_a_run_without_end_takes_a_schedule_that_needs_no_length(schedule) -> None:
    """``max_epochs -1`` gives an endless step count, which ``int()`` overflowed on."""
    model = Classifier(
        lambda shape, n: torch.nn.Linear(shape[0], n), 3, (4,), lr_scheduler=schedule
    )
    model._trainer = SimpleNamespace(estimated_stepping_batches=math.inf)
    configured = model.configure_optimizers()
    if schedule is not None:
        assert isinstance(configured["lr_scheduler"]["scheduler"], Plateau)


@pytest.mark.parametrize("schedule", [OneCycle, WarmupCosine])
def test_a_run_without_end_refuses_a_schedule_that_needs_one(schedule) -> None:
    model = Classifier(
        lambda shape, n: torch.nn.Linear(shape[0], n), 3, (4,), lr_scheduler=schedule
    )
    model._trainer = SimpleNamespace(estimated_stepping_batches=math.inf)
    with pytest.raises(ValueError, match=rf"{schedule.__name__} needs the run's length"):
        model.configure_optimizers()
