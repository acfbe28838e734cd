"""A ``validate``'s reports: its metrics and every validation sample's prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

from .. import reports
from .prediction_writer import in_order, merge, part, write


class ValidationReports(L.Callback):
    """``val_metrics.json`` and ``val_predictions.csv`` (id, label, predicted class, each
    class's probability) of a ``validate``; the validations inside ``fit`` write none.
    A cross-validation fold's fit validates its best checkpoint once more at its end, so
    ``cv`` reads each fold's scores and out-of-fold predictions here.

    Reads the logits that ``validation_step`` returns; under DDP each process writes its
    share, which the first process merges (as :class:`PredictionWriter` does).

    Args:
        dirpath: Where they go; None: the trainer's ``default_root_dir``. The command line
            sets the run directory for ``fit`` and a new ``outputs/validate-<time>/`` for a
            later ``validate``.
    """

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.batches = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING and isinstance(outputs, torch.Tensor):
            self.batches.append((outputs.float().softmax(dim=-1).cpu(), batch[1].cpu()))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.VALIDATING or trainer.sanity_checking:
            return
        out = Path(self.dirpath or trainer.default_root_dir)
        if trainer.is_global_zero:
            logged = trainer.callback_metrics.items()
            metrics = {k: float(v) for k, v in logged if k.startswith("val/")}
            reports.save_metrics(metrics, out / "val_metrics.json")
            print("Validation: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())))
        self.write_predictions(trainer, out / "val_predictions.csv")

    def write_predictions(self, trainer: L.Trainer, path: Path) -> None:
        datamodule = trainer.datamodule
        if not self.batches or not hasattr(datamodule, "val_ids"):
            return
        probabilities = torch.cat([p for p, _ in self.batches])  # N, num_classes
        labels = torch.cat([y for _, y in self.batches]).tolist()
        # This process's samples, in the order its sampler gave them (all of them in one).
        sampler = getattr(trainer.val_dataloaders, "sampler", None)
        indices = list(sampler) if trainer.world_size > 1 else range(len(datamodule.val_ids))
        ids, names = datamodule.val_ids, datamodule.class_names
        rows = [
            [index, ids[index], names[label], names[row.argmax()], *(f"{p:.6f}" for p in row)]
            for index, label, row in zip(indices, labels, probabilities.numpy(), strict=False)
        ]
        header = ["id", "label", "predicted", *names]
        path.parent.mkdir(parents=True, exist_ok=True)
        if trainer.world_size == 1:
            write(path, header, in_order(rows))
            return
        write(part(path, trainer.global_rank), ["index", *header], rows)
        trainer.strategy.barrier("validation predictions written")
        if trainer.is_global_zero:
            merge([part(path, rank) for rank in range(trainer.world_size)], path, header)
