"""Predictions of the ``predict`` subcommand, written to the run directory as CSV."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionWriter(BasePredictionWriter):
    """Writes one row per sample: its id, the predicted class and every class probability.

    The id is what the data module's ``predict_ids`` names (a file path, a row id); the
    position in the predicted data otherwise.

    Lightning returns predictions to the caller, which the command line drops; this keeps them.
    Under DDP each process writes the samples it predicted, to ``<stem>.rank<N>.csv``.
    """

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: Sequence[torch.Tensor],
        batch_indices: Sequence[Sequence[Sequence[int]]],
    ) -> None:
        probabilities = torch.cat(list(predictions)).float().cpu()  # N, num_classes
        predicted = probabilities.argmax(dim=1).tolist()
        # Sample indices as the sampler chose them (under DDP each rank holds a share).
        indices = [i for batch in batch_indices[0] for i in batch] if batch_indices else []
        indices = indices or range(len(probabilities))
        ids = getattr(trainer.datamodule, "predict_ids", None)
        ids = [ids[i] for i in indices] if ids is not None else list(indices)
        names = getattr(trainer.datamodule, "class_names", None)
        names = names or [str(c) for c in range(probabilities.shape[1])]
        path = Path(trainer.default_root_dir) / self.filename
        if trainer.world_size > 1:
            path = path.with_suffix(f".rank{trainer.global_rank}.csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["id", "predicted", *names])
            for sample, label, row in zip(ids, predicted, probabilities.tolist(), strict=True):
                writer.writerow([sample, names[label], *(f"{p:.6f}" for p in row)])
        print(f"Predictions: {path}")
