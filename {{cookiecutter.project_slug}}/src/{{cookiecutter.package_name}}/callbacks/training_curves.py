"""``plots/curves.png`` after every fit, whatever the logger (or none)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
from lightning.pytorch.utilities import rank_zero_info

from .. import reports


class TrainingCurves(L.Callback):
    """Train/val loss, the other epoch metrics and the learning rate, one point per epoch.

    A finished epoch's metrics are read when the next one starts (or the fit ends): by then
    the model has logged its epoch-end training metrics and validation has run. Reading them
    waits for the GPU once per epoch, not per step.
    """

    def __init__(self, filename: str = "plots/curves.png") -> None:
        self.filename = filename
        self.history: list[dict[str, float]] = []
        self._learning_rates: dict[int, float] = {}  # by epoch: a resumed fit starts late

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.optimizers:
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            self._learning_rates[trainer.current_epoch] = lr

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self._record(trainer, trainer.current_epoch - 1)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, trainer.current_epoch - 1)
        if trainer.is_global_zero and self.history:
            path = Path(trainer.default_root_dir) / self.filename
            reports.publish_figure(self.figure(), path, trainer.loggers)
            rank_zero_info(f"Training curves: {path}")

    def _record(self, trainer: L.Trainer, epoch: int) -> None:
        if any(row["epoch"] == epoch for row in self.history) or epoch < 0:
            return
        row = {"epoch": float(epoch)}
        for key, value in trainer.callback_metrics.items():
            if key.startswith(("train/", "val/")) and value.numel() == 1:
                row[key] = float(value)
        if epoch in self._learning_rates:
            row["lr"] = self._learning_rates[epoch]
        self.history.append(row)

    def figure(self) -> plt.Figure:
        keys = sorted({key for row in self.history for key in row} - {"epoch"})
        losses = [k for k in keys if k.endswith("/loss")]
        scores = [k for k in keys if k not in losses and k != "lr"]
        panels = [("loss", losses), ("metrics", scores), ("learning rate", ["lr"])]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
        for ax, (title, names) in zip(axes, panels, strict=True):
            for name in names:
                points = [(row["epoch"], row[name]) for row in self.history if name in row]
                if points:
                    ax.plot(*zip(*points, strict=True), marker=".", label=name)
            ax.set(title=title, xlabel="epoch")
            if ax.lines and title != "learning rate":
                ax.legend(fontsize=8)
        fig.tight_layout()
        return fig
