"""Lightning's Trainer plus this project's own subcommands.

LightningCLI runs Trainer methods as subcommands. A method added here and listed in
``cli.ProjectCLI.subcommands`` becomes a subcommand with the same config files, ``--help``
and run directory as ``fit``; its typed parameters become its options.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.tuner import Tuner

from .data.base import CheckedDataModule
from .data.findings import raise_on_failures


class Trainer(L.Trainer):
    def tune(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule | None = None,
        min_lr: float = 1e-6,
        max_lr: float = 1.0,
        num_training: int = 100,
    ) -> float | None:
        """Find a learning rate with Lightning's LR finder; plot it in the run directory.

        Args:
            min_lr: Smallest learning rate tried.
            max_lr: Largest learning rate tried.
            num_training: Number of learning rates tried, one batch each.
        """
        finder = Tuner(self).lr_find(
            model, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr, num_training=num_training
        )
        suggestion = finder.suggestion() if finder is not None else None
        if finder is not None and self.is_global_zero:
            plot = Path(self.default_root_dir) / "plots" / "lr_finder.png"
            plot.parent.mkdir(parents=True, exist_ok=True)
            finder.plot(suggest=True).savefig(plot)
            print(f"LR finder plot: {plot}")
            print(f"Suggested learning rate: {suggestion} (use it with --model.lr {suggestion})")
        return suggestion

    def profile(self, model: L.LightningModule, datamodule: CheckedDataModule) -> None:
        """Check the data without training: ``profile.json``, pictures, split manifest.

        Exits non-zero when ``fit`` would refuse the data, so it can gate a pipeline.
        """
        datamodule.write_reports(Path(self.default_root_dir), self.loggers)
        raise_on_failures(datamodule.prepared.findings)
