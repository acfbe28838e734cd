"""Command line: ``fit``, ``validate``, ``test``, ``predict`` and ``tune`` through LightningCLI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import (
    ArgsType,
    LightningArgumentParser,
    LightningCLI,
    SaveConfigCallback,
)
from lightning.pytorch.utilities import rank_zero_info

from . import reports
from .rundir import RUN_DIR_ENV, config_filename, resolve_run_dir
from .system import Classifier
from .tracking import point_loggers_at, spec_class
from .trainer import Trainer


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config in the run directory and sends it to the loggers."""

    def __init__(self, parser, config, run_dir: Path, config_filename: str, **kwargs: Any) -> None:
        super().__init__(parser, config, config_filename, save_to_log_dir=False, **kwargs)
        self.run_dir = run_dir

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / self.config_filename
        self.parser.save(
            self.config, path, skip_none=False, overwrite=self.overwrite, multifile=self.multifile
        )
        resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams(resolved)


def split_seed(seed: int | bool) -> int:
    """The data split follows ``seed_everything``; a random seed would make splits unrepeatable."""
    if isinstance(seed, bool) or seed is None:
        raise ValueError(
            f"seed_everything must be an integer (got {seed!r}): it fixes the data split, "
            "the loader workers and the weight init."
        )
    return seed


class ProjectCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "tune": {"model", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--run.root", type=Path, default=Path("runs"), help="Parent of all run directories."
        )
        parser.add_argument(
            "--run.name",
            type=str | None,
            default=None,
            help="Run directory name; default: time and subcommand.",
        )
        parser.link_arguments("seed_everything", "data.init_args.seed", compute_fn=split_seed)
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        run_dir = resolve_run_dir(
            config.run.root, config.run.name, self.subcommand, config.get("ckpt_path")
        )
        config.run.root, config.run.name = (
            run_dir.parent,
            run_dir.name,
        )  # the saved config resumes here
        os.environ.setdefault(RUN_DIR_ENV, str(run_dir))
        self.run_dir = run_dir
        trainer = config.trainer
        trainer.default_root_dir = str(run_dir)
        for notice in point_loggers_at(trainer.logger, run_dir):
            rank_zero_info(notice)
        has_logger = trainer.logger not in (None, False, [])
        callbacks = []
        for spec in trainer.callbacks or []:
            cls = spec_class(spec)
            if (
                cls is not None
                and issubclass(cls, ModelCheckpoint)
                and spec.init_args.get("dirpath") is None
            ):
                spec.init_args.dirpath = str(run_dir / "checkpoints")
            if cls is not None and issubclass(cls, LearningRateMonitor) and not has_logger:
                rank_zero_info("No logger: LearningRateMonitor is off for this run.")
                continue
            callbacks.append(spec)
        trainer.callbacks = callbacks
        self.save_config_kwargs = {
            "run_dir": run_dir,
            "config_filename": config_filename(run_dir, self.subcommand),
        }
        rank_zero_info(f"Run directory: {run_dir}")

    def after_fit(self) -> None:
        if self.trainer.fast_dev_run:
            return
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        self.after_test()

    def after_test(self) -> None:
        if not self.trainer.is_global_zero:
            return
        metrics = {
            k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("test/")
        }
        written = [reports.save_metrics(metrics, self.run_dir / "test_metrics.json")]
        class_names = getattr(self.datamodule, "class_names", None)
        matrix = getattr(self.model, "confusion_matrix", None)
        if class_names is not None and matrix is not None:
            plot = self.run_dir / "plots" / "confusion_matrix.png"
            written.append(reports.save_confusion_matrix(matrix, class_names, plot))
        summary = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        print(f"Test: {summary}")
        for path in written:
            print(f"  wrote {path}")
        print(f"Run directory: {self.run_dir}")


def cli_main(args: ArgsType = None) -> ProjectCLI:
    """Parse ``args`` (default: the command line) and run the subcommand; ``args`` is for tests."""
    exported = RUN_DIR_ENV not in os.environ
    try:
        return ProjectCLI(
            Classifier,
            L.LightningDataModule,
            subclass_mode_data=True,
            trainer_class=Trainer,
            save_config_callback=RunConfigSaver,
            auto_configure_optimizers=False,
            seed_everything_default=42,
            args=args,
        )
    finally:
        if exported:
            os.environ.pop(RUN_DIR_ENV, None)


def main() -> None:
    """Console script and ``python -m`` entry point."""
    cli_main()
