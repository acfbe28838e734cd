"""Callbacks: gradient monitoring, the non-finite guard, and early stopping."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import DataLoader, TensorDataset

from {{ cookiecutter.package_name }}.callbacks import GradientMonitor

from .conftest import NO_LOGGER, default_config, logged, run


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
    return L.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **kwargs,
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
    quiet = {step: reads for step, reads in monitor.reads.items() if (step + 1) % 4}
    checks = {step: reads for step, reads in monitor.reads.items() if not (step + 1) % 4}
    assert len(quiet) == 6 and not any(quiet.values()), quiet
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
