"""Callbacks: gradient monitoring, the non-finite guard, early stopping and the pictures."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.strategies import DeepSpeedStrategy
from torch.utils.data import DataLoader, TensorDataset

from {{ cookiecutter.package_name }}.callbacks import GradientMonitor, TrainingCurves, ValidationPlots
from {{ cookiecutter.package_name }}.callbacks.gradient_trends import GradientTrends

from .conftest import LOGGERS, NO_LOGGER, default_config, logged, run


class Poisoned(L.LightningModule):
    """Two layers; the second one's gradient turns NaN at step ``bad_step``."""

    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.encoder, self.head, self.bad_step = (
            torch.nn.Linear(4, 4),
            torch.nn.Linear(4, 1),
            bad_step,
        )

    def training_step(self, batch, batch_idx):
        loss = self.head(self.encoder(batch[0])).pow(2).mean()
        if self.global_step == self.bad_step:
            self.head.weight.register_hook(lambda grad: grad * float("nan"))
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def tiny_trainer(**kwargs) -> L.Trainer:
    options = {"enable_checkpointing": False} | kwargs
    return L.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, **options,
    )  # fmt: skip


def test_logs_global_and_per_layer_norms(fitted) -> None:
    norms = logged(fitted, "grad_norm/global")
    assert len(norms) == fitted.trainer.global_step and min(norms) > 0
    header = (Path(fitted.trainer.logger.log_dir) / "metrics.csv").open().readline().split(",")
    assert len([key for key in header if key.startswith("grad_norm/network.")]) >= 2


def test_stops_on_nan_gradient_naming_layer_and_step() -> None:
    loader = DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=4)
    trainer = tiny_trainer(callbacks=[GradientMonitor()])
    with pytest.raises(FloatingPointError, match=r"'head.weight' at step 3"):
        trainer.fit(Poisoned(bad_step=3), loader)


def test_nan_is_caught_within_the_check_interval() -> None:
    loader = DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=4)
    trainer = tiny_trainer(callbacks=[GradientMonitor(every_n_steps=2)])
    with pytest.raises(FloatingPointError, match=r"'head.weight' at step 2 \(noticed at step 3\)"):
        trainer.fit(Poisoned(bad_step=2), loader)
    assert trainer.global_step == 3  # stopped at the first check after the fault


def test_without_a_logging_interval_the_end_of_training_still_checks() -> None:
    loader = DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=4)
    trainer = tiny_trainer(callbacks=[GradientMonitor()], log_every_n_steps=0)
    with pytest.raises(FloatingPointError, match=r"'head.weight' at step 3 \(noticed at step 8\)"):
        trainer.fit(Poisoned(bad_step=3), loader)


def test_the_last_checkpoint_before_a_nan_stays_loadable(tmp_path) -> None:
    loader = DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=4)
    every_2 = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_last=True)
    callbacks = [GradientMonitor(every_n_steps=50), every_2]
    trainer = tiny_trainer(callbacks=callbacks, enable_checkpointing=True)
    with pytest.raises(FloatingPointError, match=r"'head.weight' at step 5"):
        trainer.fit(Poisoned(bad_step=5), loader)  # the step-6 checkpoint would hold NaNs
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert state["global_step"] == 4
    assert all(torch.isfinite(w).all() for w in state["state_dict"].values())
    Poisoned(bad_step=-1).load_state_dict(state["state_dict"])


@contextmanager
def reads_counted(reads: list[str]):
    """Count every way a tensor's value reaches Python (each one waits for the GPU)."""
    names = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")
    originals = {name: getattr(torch.Tensor, name) for name in names}

    def counting(name: str):
        def read(self, *args, **kwargs):
            reads.append(name)
            return originals[name](self, *args, **kwargs)

        return read

    try:
        for name in names:
            setattr(torch.Tensor, name, counting(name))
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


class Watched(GradientMonitor):
    """Records how many values each optimizer step of the monitor read back."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reads: dict[int, list[str]] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        with reads_counted(self.reads.setdefault(trainer.global_step, [])):
            super().on_before_optimizer_step(trainer, pl_module, optimizer)


def test_steps_between_checks_read_nothing_back_from_the_device() -> None:
    loader = DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=4)
    monitor = Watched(every_n_steps=4)
    tiny_trainer(callbacks=[monitor]).fit(Poisoned(bad_step=-1), loader)
    # Step 0 reads once: the first norms are the baseline of the exploding/vanishing checks.
    quiet = {step: reads for step, reads in monitor.reads.items() if (step + 1) % 4 and step}
    checks = {step: reads for step, reads in monitor.reads.items() if not (step + 1) % 4}
    assert len(quiet) == 5 and not any(quiet.values()), quiet
    assert len(checks) == 2 and all(checks.values())  # the check itself does read: one sync


def test_nan_guard_can_be_switched_off() -> None:
    loader = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)
    trainer = tiny_trainer(callbacks=[GradientMonitor(stop_on_nonfinite=False)])
    trainer.fit(Poisoned(bad_step=0), loader)
    assert trainer.global_step == 2


def test_early_stopping_stops_a_run_that_does_not_improve(tmp_path) -> None:
    config = default_config()
    callbacks = config["trainer"]["callbacks"]
    stopper = next(c for c in callbacks if c["class_path"].endswith(".EarlyStopping"))
    stopper["init_args"].update(patience=2, min_delta=10.0)  # no epoch improves val/loss by 10
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = run("fit", tmp_path, *NO_LOGGER, "--trainer.max_epochs=30", config=path)
    stopped = next(c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping))
    assert stopped.stopped_epoch == 2
    assert cli.trainer.current_epoch < 30


def trends_over(sequences: dict[str, list[float]], **options) -> list[str]:
    trends, alerts = GradientTrends(**options), []
    for step, norms in enumerate(zip(*sequences.values(), strict=True)):
        alerts += trends.update(step, list(sequences), list(norms))
    return alerts


def test_a_converging_run_with_noisy_steps_raises_no_alert() -> None:
    falling = [1.0 / (1 + step) for step in range(200)]  # 200x down, like a converging run
    noisy = [1e-6 if step % 7 == 0 else 0.5 for step in range(1, 201)]  # single-step dips
    assert trends_over({"conv.weight": falling, "head.bias": [0.5, *noisy[1:]]}) == []


def test_exploding_and_vanishing_layers_are_named_once() -> None:
    steps = 12
    alerts = trends_over(
        {
            "head.weight": [1.0] * steps,
            "body.weight": [1.0, 10.0, 100.0] + [1000.0] * (steps - 3),
            "stem.weight": [1.0] + [1e-5] * (steps - 1),
        }
    )
    assert len(alerts) == 2, alerts
    assert alerts[0].startswith("GradientMonitor: vanishing gradient in 'stem.weight' at step 3")
    assert "exploding gradient in 'body.weight' at step 5: norm 1e+03 is 794x its" in alerts[1]


def test_a_late_blow_up_is_judged_against_the_late_norms() -> None:
    """Norms fall 1000x as the run converges; a 500x blow-up at step 300 returns to half the
    first step's norm, which the first step alone would call normal."""
    falling = [1.0 / (1 + step) ** 1.2 for step in range(300)]
    blown = falling + [0.5] * 5
    alerts = trends_over({"head.weight": blown, "body.weight": [1.0] * len(blown)})
    assert len(alerts) == 1, alerts
    assert alerts[0].startswith("GradientMonitor: exploding gradient in 'head.weight' at step 302")
    assert trends_over({"head.weight": falling + falling[-1:] * 5}) == []


class SigmoidStack(L.LightningModule):
    """Twelve sigmoid layers: the classic network whose first layers stop learning."""

    def __init__(self, depth: int = 12, width: int = 16) -> None:
        super().__init__()
        layers = [(torch.nn.Linear(width, width), torch.nn.Sigmoid()) for _ in range(depth)]
        self.layers = torch.nn.Sequential(*sum(layers, ()), torch.nn.Linear(width, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layers(x).squeeze(1), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_deep_sigmoid_stack_trips_the_vanishing_check() -> None:
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(64, 16), torch.randn(64)), batch_size=8)
    monitor = GradientMonitor(every_n_steps=1)
    with pytest.warns(UserWarning, match="vanishing gradient in 'layers.0.weight'"):
        tiny_trainer(callbacks=[monitor]).fit(SigmoidStack(), loader)
    assert not any("exploding" in alert for alert in monitor.alerts)


def test_a_learning_rate_of_1e3_trips_the_exploding_check_or_the_stop(tmp_path) -> None:
    args = ["--model.lr=1000", "--model.lr_scheduler=null", "--trainer.max_epochs=3"]
    try:
        cli = run("fit", tmp_path, *NO_LOGGER, *args, "--trainer.gradient_clip_val=null")
    except FloatingPointError as stop:
        assert "Non-finite gradient" in str(stop)
        return
    monitor = next(c for c in cli.trainer.callbacks if isinstance(c, GradientMonitor))
    assert any("exploding gradient" in alert for alert in monitor.alerts), monitor.alerts


def test_histograms_reach_tensorboard(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = default_config()
    callbacks = config["trainer"]["callbacks"]
    monitor = next(c for c in callbacks if c["class_path"].endswith("GradientMonitor"))
    monitor["init_args"] = {"histogram_every_n_steps": 2}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = run("fit", tmp_path, f"--trainer.logger={LOGGERS / 'tensorboard.yaml'}", config=path)
    events = EventAccumulator(str(cli.run_dir / "tensorboard"), size_guidance={"histograms": 0})
    events.Reload()
    tags = events.Tags()["histograms"]
    layer = next(name for name, _ in cli.model.named_parameters())
    assert f"weights/{layer}" in tags and f"gradients/{layer}" in tags
    assert len(events.Histograms(f"weights/{layer}")) == cli.trainer.global_step // 2


def test_fit_plots_training_curves_per_epoch(fitted) -> None:
    curves = next(c for c in fitted.trainer.callbacks if isinstance(c, TrainingCurves))
    assert [row["epoch"] for row in curves.history] == [0.0, 1.0]
    for row in curves.history:
        assert {"val/loss", "val/acc", "train/acc", "lr"} <= set(row), row
    assert (fitted.run_dir / "plots" / "curves.png").stat().st_size > 10_000


def test_validation_plots_count_every_validation_prediction(fitted) -> None:
    plots = next(c for c in fitted.trainer.callbacks if isinstance(c, ValidationPlots))
    matrix = plots.matrix.compute()  # the last validation's counts
    val = fitted.datamodule.val_dataloader()
    seen = min(len(val.dataset), fitted.trainer.limit_val_batches * val.batch_size)
    assert int(matrix.sum()) == seen
    accuracy = matrix.diagonal().sum() / matrix.sum()
    assert float(accuracy) == pytest.approx(logged(fitted, "val/acc")[-1])
    assert (fitted.run_dir / "plots" / "val_confusion_matrix.png").stat().st_size > 0


def test_validation_grid_shows_the_first_validation_samples(fitted) -> None:
    plots = next(c for c in fitted.trainer.callbacks if isinstance(c, ValidationPlots))
    x, y = next(iter(fitted.datamodule.val_dataloader()))[:2]
    if x.ndim != 4:
        assert plots.shown is None  # tables: no picture of a row
        assert not (fitted.run_dir / "plots" / "val_predictions.png").exists()
        return
    images, true, predicted = plots.shown
    assert torch.equal(images, x[: plots.samples]) and torch.equal(true, y[: plots.samples])
    fitted.model.eval()
    with torch.no_grad():
        assert torch.equal(predicted, fitted.model(images).argmax(dim=1))
    assert (fitted.run_dir / "plots" / "val_predictions.png").stat().st_size > 0


def test_under_deepspeed_the_monitor_says_it_is_off() -> None:
    """ZeRO holds the gradients in its own buffers: no silent watching of nothing."""
    strategy = DeepSpeedStrategy.__new__(DeepSpeedStrategy)  # deepspeed itself needs CUDA
    trainer = SimpleNamespace(strategy=strategy)
    network = torch.nn.Linear(2, 1)
    network(torch.ones(1, 2)).sum().backward()
    monitor = GradientMonitor(every_n_steps=1)
    with pytest.warns(UserWarning, match="GradientMonitor is off under DeepSpeed"):
        monitor.on_train_start(trainer, network)
    monitor.on_before_optimizer_step(trainer, network, None)
    assert monitor._history is None  # nothing recorded, nothing to stop on
