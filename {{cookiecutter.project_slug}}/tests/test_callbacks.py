"""Callbacks: gradient monitoring, the non-finite guard, and early stopping."""

from __future__ import annotations

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
