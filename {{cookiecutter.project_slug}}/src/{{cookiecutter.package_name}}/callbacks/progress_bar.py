"""Lightning's progress bar, showing the training loss without stalling the GPU."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    """Shows ``train/loss``, read back from the device only when the bar refreshes.

    A value logged with ``prog_bar=True`` is turned into a Python number after every step,
    and each such read makes the CPU wait until the GPU has finished all queued work. Here the
    loss is logged without it and read every ``refresh_rate`` steps instead.
    """

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            metrics["train/loss"] = f"{float(loss):.3g}"
        return metrics
