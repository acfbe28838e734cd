"""One directory per run: resolved config, checkpoints, logs, plots and reports.

Layout::

    runs/<name>/
        config.yaml                 the resolved config; re-running it resumes this run
        config.<subcommand>-<time>.yaml   configs of later commands on the same run
        checkpoints/best-*.ckpt, last.ckpt
        csv/ | tensorboard/ | wandb/       whichever loggers are on
        plots/, test_metrics.json   written after testing

``<name>`` defaults to ``<YYYYmmdd-HHMMSS>-<subcommand>``. A checkpoint inside a run
directory brings later commands (resume, test, predict) back to that directory.
"""

from __future__ import annotations

import importlib
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    OnExceptionCheckpoint,
    ProgressBar,
)
from lightning.pytorch.utilities import rank_zero_info

from .checkpoints import damage

# DDP starts one process per device, each parsing the same command line; the first one
# exports the directory it chose so the others write to the same place.
RUN_DIR_ENV = f"{__package__.upper()}_RUN_DIR"


def run_dir_of_checkpoint(ckpt_path: str | os.PathLike | None) -> Path | None:
    """The run directory a checkpoint file was saved in, if it was saved in one."""
    if ckpt_path is None or not Path(ckpt_path).exists():  # DeepSpeed saves a directory
        return None
    candidate = Path(ckpt_path).resolve().parent.parent
    return candidate if (candidate / "config.yaml").is_file() else None


def resolve_run_dir(root: Path, name: str | None, subcommand: str, ckpt_path: str | None) -> Path:
    """Where this command writes, following the rules in the module docstring."""
    if inherited := os.environ.get(RUN_DIR_ENV):
        return Path(inherited)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"--run.root {root} is a file; runs need a directory there.")
    if (from_checkpoint := run_dir_of_checkpoint(ckpt_path)) is not None:
        return from_checkpoint
    if name is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(
                "Launched with several processes (torchrun/SLURM): set --run.name so that "
                "every process writes to the same run directory."
            )
        name = f"{datetime.now():%Y%m%d-%H%M%S}-{subcommand}"
    run_dir = root / name
    starts_over = subcommand == "fit" and ckpt_path is None and not requeued()
    if starts_over and (run_dir / "config.yaml").exists():
        raise FileExistsError(
            f"{run_dir} already holds a run. Resume it with --ckpt_path last, "
            "or start a new one with another --run.name."
        )
    return run_dir


def requeued() -> bool:
    """Whether this is a SLURM job started again after a requeue (time limit, preemption)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0


def newest_checkpoint(run_dir: Path) -> Path | None:
    """What a requeued job resumes from: Lightning's ``hpc_ckpt_N.ckpt`` (saved on SLURM's
    SIGUSR1 before the time limit) or ``checkpoints/last.ckpt`` (saved on SIGTERM, at each
    epoch), whichever was written last."""
    candidates = [*run_dir.glob("hpc_ckpt_*.ckpt"), run_dir / "checkpoints" / "last.ckpt"]
    saved = sorted(
        (path for path in candidates if path.is_file()), key=lambda path: path.stat().st_mtime_ns
    )
    intact = [path for path in saved if damage(path) is None]
    if saved and saved[-1] not in intact:
        chosen = f"resuming from {intact[-1]}" if intact else "starting afresh"
        rank_zero_info(f"{saved[-1]} is damaged ({damage(saved[-1])}): {chosen}")
    return intact[-1] if intact else None


def config_filename(run_dir: Path, subcommand: str) -> str:
    """``config.yaml`` for the command that creates the run; a dated name for later ones."""
    if not (run_dir / "config.yaml").exists():
        return "config.yaml"
    return f"config.{subcommand}-{datetime.now():%Y%m%d-%H%M%S}.yaml"


def spec_class(spec: Any) -> type | None:
    """The class a parsed ``class_path``/``init_args`` spec names; None for anything else."""
    if not isinstance(spec, Namespace) or "class_path" not in spec:
        return None
    module, _, name = spec.class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def place_callbacks(
    callbacks: list | None, run_dir: Path, has_logger: bool, progress_bar: bool = True
) -> tuple[list, list]:
    """Checkpoints go to ``run_dir/checkpoints``; LearningRateMonitor needs a logger; a
    configured progress bar yields to ``--trainer.enable_progress_bar false``.

    Returns the callback specs to keep and notices to print.
    """
    kept, notices = [], []
    for spec in callbacks or []:
        cls = spec_class(spec)
        saves = cls is not None and issubclass(cls, ModelCheckpoint | OnExceptionCheckpoint)
        if saves and not spec.init_args.get("dirpath"):
            spec.init_args.dirpath = str(run_dir / "checkpoints")
        if cls is not None and issubclass(cls, LearningRateMonitor) and not has_logger:
            notices.append("No logger: LearningRateMonitor is off for this run.")
            continue
        if cls is not None and issubclass(cls, ProgressBar) and not progress_bar:
            continue
        kept.append(spec)
    return kept, notices
