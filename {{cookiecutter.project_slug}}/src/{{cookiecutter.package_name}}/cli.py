"""Command line: Lightning's ``fit``, ``validate``, ``test`` and ``predict``, and the project's
own subcommands (see ``ProjectCLI.subcommands``)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.cli import (
    ArgsType,
    LightningArgumentParser,
    LightningCLI,
    SaveConfigCallback,
)
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from . import attribution, checkpoints, evaluation, reports, strategies
from .provenance import save_provenance
from .rundir import (
    RUN_DIR_ENV,
    config_filename,
    newest_checkpoint,
    place_callbacks,
    requeued,
    resolve_run_dir,
)
from .system import Classifier
from .tracking import place_loggers
from .trainer import Trainer


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config and its provenance (versions, git commit) in the run
    directory, and sends the config to the loggers."""

    def __init__(self, parser, config, run_dir: Path, config_filename: str, **kwargs: Any) -> None:
        super().__init__(parser, config, config_filename, save_to_log_dir=False, **kwargs)
        self.run_dir = run_dir

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / self.config_filename
        self.parser.save(self.config, path, skip_none=False, multifile=self.multifile)
        stem = Path(self.config_filename).stem.replace("config", "provenance", 1)
        code = Path(__file__).resolve().parent
        save_provenance(self.run_dir / f"{stem}.json", self.config.get("seed_everything"), code)
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
    """LightningCLI with one directory per run and the project's own subcommands."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # Each entry names a Trainer method (see trainer.py) and the arguments the CLI supplies.
        own = {
            "tune": {"model", "datamodule"},
            "profile": {"model", "datamodule"},
            "benchmark": {"model", "datamodule"},
            "export": {"model", "datamodule"},
            "serve": {"model", "datamodule"},
{%- if cookiecutter.task == "image_classification" %}
            "shard": {"model", "datamodule"},
{%- endif %}
        }
        return {**LightningCLI.subcommands(), **own}

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        if subcommand := self.config.get("subcommand"):  # before Lightning reads the file
            checkpoints.refuse_damaged(self.config[subcommand].get("ckpt_path"))

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run.root", type=Path, default=Path("runs"), help="Parent of runs.")
        parser.add_argument("--run.name", type=str | None, help="Default: time and subcommand.")
        parser.link_arguments("seed_everything", "data.init_args.seed", compute_fn=split_seed)
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        strategies.check(config.trainer, torch.cuda.device_count())
        ckpt_path = config.get("ckpt_path")
        self.run_dir = resolve_run_dir(config.run.root, config.run.name, self.subcommand, ckpt_path)
        if self.subcommand == "fit" and ckpt_path is None and requeued():
            newest = newest_checkpoint(self.run_dir)  # None: killed before its first save
            ckpt_path = config.ckpt_path = str(newest) if newest else None
        # Written back so that the saved config, run again, resumes in this directory.
        config.run.root, config.run.name = self.run_dir.parent, self.run_dir.name
        os.environ.setdefault(RUN_DIR_ENV, str(self.run_dir))
        restoring = ("validate", "test", "predict", "export", "serve")
        restores_data = self.subcommand in restoring and ckpt_path
        if restores_data and "fitted_from" in config.data.get("init_args", {}):
            # The data module takes class names, statistics and vocabularies from the
            # checkpoint, so new inputs are prepared exactly as the training data was.
            config.data.init_args.fitted_from = Path(ckpt_path)
        trainer = config.trainer
        trainer.default_root_dir = str(self.run_dir)
        notices = place_loggers(trainer.logger, self.run_dir)
        has_logger = trainer.logger not in (None, False, [])
        trainer.callbacks, more = place_callbacks(
            trainer.callbacks, self.run_dir, has_logger, trainer.enable_progress_bar is not False
        )
        for notice in [*notices, *more, f"Run directory: {self.run_dir}"]:
            rank_zero_info(notice)
        filename = config_filename(self.run_dir, self.subcommand)
        self.save_config_kwargs = {"run_dir": self.run_dir, "config_filename": filename}

    def before_fit(self) -> None:
        if self.model.lr != "auto":
            return
        suggestion = self.trainer.tune(self.model, datamodule=self.datamodule)
        if suggestion is None:
            raise ValueError(
                "--model.lr auto: the LR finder made no suggestion (it is skipped under "
                "fast_dev_run and needs a dozen training steps or more); give a number instead."
            )
        self.model.lr = self.model.hparams.lr = suggestion  # the checkpoint records it
        for logger in self.trainer.loggers:
            logger.log_metrics({"lr_finder/suggestion": suggestion})
        rank_zero_info(f"Training with the LR finder's learning rate {suggestion:.4g}")

    def after_fit(self) -> None:
        if self.trainer.fast_dev_run:
            return
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        if best:
            self.model = strategies.ready_to_restore(self.model, self.trainer.strategy, best)
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        self.after_test()

    def after_test(self) -> None:
        if not self.trainer.is_global_zero:
            return
        metrics = {
            k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("test/")
        }
        metrics |= self.report_groups()
        reports.save_metrics(metrics, self.run_dir / "test_metrics.json")
        matrix = getattr(self.model, "confusion_matrix", None)
        class_names = getattr(self.datamodule, "class_names", None)
        if matrix is not None and class_names is None:
            class_names = [str(i) for i in range(len(matrix))]
        if matrix is not None:
            figure = reports.confusion_figure(matrix, class_names, "Test confusion matrix")
            plot = self.run_dir / "plots" / "confusion_matrix.png"
            reports.publish_figure(figure, plot, self.trainer.loggers)
            rows = evaluation.per_class_table(matrix, class_names)
            reports.save_table(rows, self.run_dir / "per_class_metrics.csv")
            print(reports.format_table(rows))
        bins = getattr(self.model, "calibration_bins", None)
        if bins is not None:
            figure = reports.reliability_figure(bins, metrics["test/ece"])
            plot = self.run_dir / "plots" / "reliability.png"
            reports.publish_figure(figure, plot, self.trainer.loggers)
        if strategies.holds_whole_model(self.trainer.strategy):
            attribution.explain(self.model, self.datamodule, self.run_dir, self.trainer.loggers)
        print("Test: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())))
        print(reports.describe_run(self.run_dir))

    def report_groups(self) -> dict[str, float]:
        """``group_metrics.json`` and a printed table when the data names groups; returns
        the largest gaps as test metrics."""
        counts = getattr(self.model, "group_confusion", None)
        if counts is None:
            return {}
        names = self.datamodule.class_names
        rows = evaluation.per_group_table(counts, self.datamodule.group_names, names)
        threshold = self.datamodule.max_group_gap
        gaps = evaluation.largest_gaps(rows, threshold)
        summary = {"groups": rows, "gaps": gaps, "max_group_gap": threshold}
        path = self.run_dir / "group_metrics.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        print(reports.format_table(rows) + "\n" + evaluation.format_gaps(gaps))
        flagged = [metric for metric, gap in gaps.items() if gap["flagged"]]
        if flagged:
            rank_zero_warn(
                f"Test metrics differ between groups by more than max_group_gap={threshold} "
                f"({', '.join(flagged)}): see {path}"
            )
        gap_metrics = {f"test/group_gap/{metric}": gap["gap"] for metric, gap in gaps.items()}
        for logger in self.trainer.loggers:
            logger.log_metrics(gap_metrics)
        return gap_metrics


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
    try:
        cli_main()
    except SIGTERMException as stopped:  # Lightning exits 0 on SIGTERM: a job looks finished
        raise SystemExit(128 + signal.SIGTERM) from stopped
