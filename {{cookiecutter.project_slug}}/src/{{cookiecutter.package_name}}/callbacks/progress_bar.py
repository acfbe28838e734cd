"""Lightning's progress bar, showing the training loss without stalling the GPU, and one
plain line per epoch where the output is a log rather than a terminal."""

from __future__ import annotations

import sys

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    """Shows ``train/loss``, read back from the device only when the bar refreshes.

    A value logged with ``prog_bar=True`` is turned into a Python number after every step,
    and each such read makes the CPU wait until the GPU has finished all queued work. Here the
    loss is logged without it and read every ``refresh_rate`` steps instead.
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        leave: bool = False,
        lines: bool | None = None,
    ) -> None:
        """
        Args:
            refresh_rate: Steps between refreshes of the bar.
            process_position: The bar's line, for several trainings in one terminal.
            leave: Keep each epoch's finished bar.
            lines: One line per epoch instead of bars; None: when the output is not a
                terminal (a log file, CI), where bars leave carriage returns and cursor codes.
        """
        super().__init__(refresh_rate, process_position, leave)
        self.lines = not sys.stdout.isatty() if lines is None else lines

    @property
    def is_enabled(self) -> bool:
        return super().is_enabled and not self.lines

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            metrics["train/loss"] = f"{float(loss):.3g}"
        return metrics

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.lines and trainer.is_global_zero and not trainer.sanity_checking:
            print(epoch_line(trainer, self.get_metrics(trainer, pl_module)), flush=True)


def epoch_line(trainer: L.Trainer, metrics: dict) -> str:
    """``Epoch 3/30: train/loss 0.366, val/acc 0.965, ...`` (epochs counted from 1)."""
    total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
    shown = [
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in metrics.items()
        if key != "v_num"
    ]
    return f"Epoch {trainer.current_epoch + 1}{total}: {', '.join(shown)}"
