"""Train, evaluate, export and serve the project's models: Lightning's subcommands and ours.

Lightning's ``fit``, ``validate``, ``test`` and ``predict``, and the project's own subcommands
(see ``ProjectCLI.subcommands``)."""

from __future__ import annotations

import os
import signal
import sys
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
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from . import checkpoints, reports, strategies
from .callbacks.trial_pruning import in_sweep, pruned
from .commands import EXPERIMENT_HELP, SUBCOMMAND_HELP, program
from .data.findings import DataError
from .experiments.study import PRUNED
from .parser import EpilogAsWritten, ProjectParser
from .provenance import save_provenance
from .quiet import silence_library_noise
from .rundir import (
    OUTPUTS_DIR_ENV,
    RUN_DIR_ENV,
    claim_run_dir,
    config_filename,
    newest_checkpoint,
    outputs_dir,
    place_callbacks,
    release_claim,
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
        resolved = self.parser.dump(self.config, skip_none=False)  # dumped once: ~0.3 s each
        if self.multifile:
            self.parser.save(self.config, path, skip_none=False, multifile=True)
        else:
            with path.open("x") as file:  # "x": never overwrites, as parser.save
                file.write(resolved)
        release_claim(self.run_dir)  # config.yaml holds the run's name from now on
        stem = Path(self.config_filename).stem.replace("config", "provenance", 1)
        code = Path(__file__).resolve().parent
        save_provenance(self.run_dir / f"{stem}.json", self.config.get("seed_everything"), code)
        for logger in trainer.loggers:
            logger.log_hyperparams(yaml.safe_load(resolved))


def refuse_training_nothing(trainer: Any) -> None:
    """A fit that trains no step would test the untrained model and publish that as the
    run's result."""
    for key in ("max_epochs", "max_steps", "limit_train_batches"):
        if trainer.get(key) == 0:
            raise ValueError(
                f"--trainer.{key} 0 trains nothing: the run would test an untrained model. "
                "Set it above 0 (max_epochs -1: until stopped); `profile` checks the data "
                "without training, `test --ckpt_path` evaluates a trained model."
            )


def requested_subcommand(args: ArgsType, known: dict) -> str | None:
    """The subcommand ``args`` (default: the command line) starts with, when it names one;
    None for anything else (``--help``, a mistyped name), which needs every parser."""
    args = sys.argv[1:] if args is None else args
    first = args[0] if isinstance(args, list | tuple) and args else None
    return first if first in known else None


def first_process() -> bool:
    """Rank 0 of a launch by torchrun or SLURM, or the only process."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0


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

    claimed: Path | None = None  # the run directory this process claimed for a new fit
    requested: str | None = None  # the one subcommand whose parser is built; None: all

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.requested = requested_subcommand(kwargs.get("args"), self.every_subcommand())
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            if self.claimed is not None and not (self.claimed / "config.yaml").exists():
                release_claim(self.claimed)  # stopped before the run began: the name is free
            raise

    def subcommands(self) -> dict[str, set[str]]:
        """The subcommands this command line needs parsers for: building one reads every
        class signature again (~0.2 s each), so a command builds its own only."""
        every = self.every_subcommand()
        return {self.requested: every[self.requested]} if self.requested else every

    @staticmethod
    def every_subcommand() -> dict[str, set[str]]:
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

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict
    ) -> None:
        listed = "".join(f"\n  {name:<10}{line}" for name, line in EXPERIMENT_HELP.items())
        epilog = f"experiments (each `<name> --help`):{listed}"
        main_kwargs = {**main_kwargs, "epilog": epilog, "formatter_class": EpilogAsWritten}
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        listed = getattr(self.parser._subcommands_action, "_choices_actions", [])
        for choice in listed:  # argparse keeps each subcommand's help line here
            choice.help = SUBCOMMAND_HELP.get(choice.dest, choice.help)

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

    def _parse_ckpt_path(self) -> None:
        """Lightning replaces the config's model settings with those saved in ``--ckpt_path``
        (the weights need them); name the ones that differed instead of replacing silently."""
        subcommand = self.config.get("subcommand")
        before = self.config[subcommand].get("model") if subcommand else None
        before = before.clone() if before is not None else None
        super()._parse_ckpt_path()
        if before is None:
            return
        after = self.config[subcommand].model
        replaced = [
            f"model.{key} {value} -> {after.get(key)}"
            for key, value in before.items()
            if key in after and value is not None and after.get(key) != value
        ]
        if replaced:
            rank_zero_info(
                "Using the checkpoint's model settings, which the weights were trained with, "
                f"instead of this config's: {', '.join(replaced)}"
            )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        strategies.check(config.trainer, torch.cuda.device_count())
        ckpt_path = config.get("ckpt_path")
        fresh_fit = self.subcommand == "fit" and ckpt_path is None and not requeued()
        if self.subcommand == "fit":
            refuse_training_nothing(config.trainer)
        launched_here = RUN_DIR_ENV not in os.environ and first_process()
        self.run_dir = resolve_run_dir(config.run.root, config.run.name, self.subcommand, ckpt_path)
        if fresh_fit and launched_here:  # DDP's other processes join the first one's claim
            claim_run_dir(self.run_dir)
            self.claimed = self.run_dir
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
        # Chosen once, by the first process: each would otherwise read its own clock.
        outputs = outputs_dir(self.run_dir, self.subcommand)
        outputs = Path(os.environ.setdefault(OUTPUTS_DIR_ENV, str(outputs)))
        trainer.callbacks, more = place_callbacks(
            trainer.callbacks, self.run_dir, outputs,
            has_logger, trainer.enable_progress_bar is not False,
        )  # fmt: skip
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
        if self.trainer.fast_dev_run or pruned(self.trainer):  # a pruned trial has no result
            return
        fold = getattr(self.datamodule, "fold", None) is not None
        if in_sweep(self.trainer) and not fold:
            # A trial is chosen on validation: the test split waits for the chosen config
            # (best.yaml's fit), so no trial's test score can steer the choice.
            return
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        if best:
            self.model = strategies.ready_to_restore(self.model, self.trainer.strategy, best)
        if fold:
            # A cross-validation fold: its held-out fold's scores and predictions, from the
            # best checkpoint, for `cv` to gather (callbacks.ValidationReports writes them).
            # The test split stays out of cv.
            self.trainer.validate(self.model, datamodule=self.datamodule, ckpt_path=best or None)
            return
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        self.after_test()

    def after_test(self) -> None:
        # The reports themselves are TestReports' (a callback: trainer.test() writes them too).
        if self.trainer.is_global_zero:
            print(reports.describe_run(self.run_dir))


def cli_main(args: ArgsType = None) -> ProjectCLI:
    """Parse ``args`` (default: the command line) and run the subcommand; ``args`` is for tests."""
    exported = RUN_DIR_ENV not in os.environ
    silence_library_noise()
    try:
        return ProjectCLI(
            Classifier,
            L.LightningDataModule,
            subclass_mode_data=True,
            trainer_class=Trainer,
            save_config_callback=RunConfigSaver,
            auto_configure_optimizers=False,
            seed_everything_default=42,
            parser_class=ProjectParser,
            parser_kwargs={"prog": program(), "description": __doc__.splitlines()[0]},
            args=args,
        )
    finally:
        if exported:
            os.environ.pop(RUN_DIR_ENV, None)
            os.environ.pop(OUTPUTS_DIR_ENV, None)
        finish_wandb_run()


def finish_wandb_run() -> None:
    """End the W&B run a command logged to: a later command in the same process (a test,
    a notebook) would otherwise log into it, since Lightning's logger reuses an open run."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def main() -> None:
    """Run the subcommand on the command line (see ``commands.main``, the entry point)."""
    try:
        cli = cli_main()
    except SIGTERMException as stopped:  # Lightning exits 0 on SIGTERM: a job looks finished
        raise SystemExit(128 + signal.SIGTERM) from stopped
    except DataError as refused:  # a refusal is its message alone, not a traceback
        print(f"error: {refused}", file=sys.stderr)
        raise SystemExit(2) from None
    if pruned(cli.trainer):
        raise SystemExit(PRUNED)
