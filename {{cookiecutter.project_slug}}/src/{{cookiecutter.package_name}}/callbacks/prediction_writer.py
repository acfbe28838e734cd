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
    position in the predicted data otherwise. Rows follow that order.

    Lightning returns predictions to the caller, which the command line drops; this keeps them.
    Under DDP each process writes the share it predicted (Lightning's predict sampler repeats
    no sample) to a part file in the shared run directory; the first process then merges the
    parts into one file, so one GPU or eight give the same ``predictions.csv``.
    """

    def __init__(self, filename: str = "predictions.csv", dirpath: str | None = None) -> None:
        """
        Args:
            filename: The CSV file's name.
            dirpath: Its folder; None: the trainer's ``default_root_dir``. The command line
                sets a new ``outputs/predict-<time>/`` in the run directory for each
                ``predict``, so none overwrites another's.
        """
        super().__init__(write_interval="epoch")
        self.filename, self.dirpath = filename, dirpath

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: Sequence[torch.Tensor],
        batch_indices: Sequence[Sequence[Sequence[int]]],
    ) -> None:
        probabilities = torch.cat(list(predictions)).float().cpu()  # N, num_classes
        predicted = pl_module.decide(probabilities).tolist()  # see Classifier's decision
        # Sample indices as the sampler chose them (under DDP each rank holds a share).
        indices = [i for batch in batch_indices[0] for i in batch] if batch_indices else []
        indices = indices or list(range(len(probabilities)))
        ids = getattr(trainer.datamodule, "predict_ids", None)
        ids = [ids[i] for i in indices] if ids is not None else indices
        names = getattr(trainer.datamodule, "class_names", None)
        names = names or [str(c) for c in range(probabilities.shape[1])]
        rows = [
            [index, sample, names[label], *(f"{p:.6f}" for p in row)]
            for index, sample, label, row in zip(
                indices, ids, predicted, probabilities.tolist(), strict=True
            )
        ]
        path = Path(self.dirpath or trainer.default_root_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        header = ["id", "predicted", *names]
        if trainer.world_size == 1:
            write(path, header, in_order(rows))
        else:
            write(part(path, trainer.global_rank), ["index", *header], rows)
            trainer.strategy.barrier("predictions written")
            if trainer.is_global_zero:
                merge([part(path, rank) for rank in range(trainer.world_size)], path, header)
        if trainer.is_global_zero:
            print(f"Predictions: {path}")


def part(path: Path, rank: int) -> Path:
    return path.with_suffix(f".rank{rank}.part.csv")


def in_order(rows: list[list]) -> list[list]:
    """Rows sorted by their first column, the sample index, without it."""
    return [row[1:] for row in sorted(rows, key=lambda row: int(row[0]))]


def write(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def merge(parts: list[Path], path: Path, header: list[str]) -> None:
    rows = []
    for part_path in parts:
        with part_path.open(newline="") as file:
            rows += list(csv.reader(file))[1:]
    write(path, header, in_order(rows))
    for part_path in parts:
        part_path.unlink()
