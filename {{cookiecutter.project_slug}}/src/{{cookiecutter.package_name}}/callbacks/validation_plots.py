"""What the model gets wrong, at each validation end: a confusion matrix and, for images, a
grid of validation samples with their true and predicted classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from .. import reports


class ValidationPlots(L.Callback):
    """``plots/val_confusion_matrix.png`` and ``plots/val_predictions.png`` (images only).

    The files hold the latest validation; W&B and TensorBoard keep one per validation, so
    their slider shows how the mistakes change. The grid shows the first ``samples`` of the
    (unshuffled) validation set, the same ones every time. Reads the logits that
    ``validation_step`` returns; nothing is added to the training step.

    Args:
        samples: Validation images in the prediction grid.
        every_n_epochs: Draw at every n-th validation (drawing takes a fraction of a second).
    """

    def __init__(self, samples: int = 16, every_n_epochs: int = 1) -> None:
        self.samples, self.every_n_epochs = samples, every_n_epochs
        self.matrix: MulticlassConfusionMatrix | None = None
        self.shown: tuple[Tensor, Tensor, Tensor] | None = None

    def _active(self, trainer: L.Trainer) -> bool:
        due = (trainer.current_epoch + 1) % self.every_n_epochs == 0
        return due and not trainer.sanity_checking

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.matrix, self.shown = None, None
        if self._active(trainer):
            classes = pl_module.hparams.num_classes
            matrix = MulticlassConfusionMatrix(classes, validate_args=False)
            self.matrix = matrix.to(pl_module.device)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.matrix is None or not isinstance(outputs, Tensor):
            return
        inputs, target = batch[0], batch[1]
        predicted = outputs.argmax(dim=1)
        self.matrix.update(predicted, target)
        if batch_idx == 0 and inputs.ndim == 4:  # images: (N, C, H, W)
            n = self.samples
            self.shown = (inputs[:n].cpu(), target[:n].cpu(), predicted[:n].cpu())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.matrix is None:
            return
        matrix = self.matrix.compute()  # every rank: sums the ranks' counts under DDP
        if not trainer.is_global_zero:
            return
        names = trainer.datamodule.class_names
        plots = Path(trainer.default_root_dir) / "plots"
        epoch, step = trainer.current_epoch, trainer.global_step
        title = f"Validation confusion matrix (epoch {epoch})"
        figure = reports.confusion_figure(matrix, names, title)
        reports.publish_figure(figure, plots / "val_confusion_matrix.png", trainer.loggers, step)
        if self.shown is not None:
            title = f"Validation predictions (epoch {epoch}): true → predicted"
            figure = reports.prediction_grid(*self.shown, names, title)
            reports.publish_figure(figure, plots / "val_predictions.png", trainer.loggers, step)
