"""One directory per run: resolved config, checkpoints, logs, plots and reports.

Layout::

    runs/<name>/
        config.yaml                 the resolved config; re-running it resumes this run
        config.<subcommand>-<time>.yaml   configs of later commands on the same run
        checkpoints/best-*.ckpt, last.ckpt
        csv/ | tensorboard/ | wandb/       whichever loggers are on
        plots/, test_metrics.json   written after testing
        outputs/<subcommand>-<time>/      what each later test or predict wrote

``<name>`` defaults to ``<YYYYmmdd-HHMMSS>-<subcommand>``. A checkpoint inside a run
directory brings later commands (resume, test, predict) back to that directory.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
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

from .callbacks import PredictionWriter, TestReports, ValidationReports
from .checkpoints import damage

# DDP starts one process per device, each parsing the same command line; the first one
# exports the directory it chose so the others write to the same place.
RUN_DIR_ENV = f"{__package__.upper()}_RUN_DIR"
# And the folder of this command's reports, which every process must write to alike.
OUTPUTS_DIR_ENV = f"{__package__.upper()}_OUTPUTS_DIR"


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


CLAIM = ".claimed"  # in a run directory whose first fit is starting: who started it


def claim_run_dir(run_dir: Path) -> None:
    """Take ``run_dir`` for a new fit, atomically: a second fit started at the same time
    with the same name is refused, naming the process that holds it. A claim left by a
    process of this machine that no longer runs is taken over."""
    run_dir.mkdir(parents=True, exist_ok=True)
    claim = run_dir / CLAIM
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": f"{datetime.now()}"}
    for _ in range(2):
        try:
            with claim.open("x") as file:  # fails if the file exists: one winner
                json.dump(holder, file)
            return
        except FileExistsError:
            other = json.loads(claim.read_text() or "{}")
            if not abandoned(other):
                raise FileExistsError(
                    f"{run_dir} is being started by process {other.get('pid')} on "
                    f"{other.get('host')} (since {other.get('started')}): choose another "
                    f"--run.name, or delete {claim} if that process is gone."
                ) from None
            claim.unlink(missing_ok=True)
    raise FileExistsError(f"{run_dir}: another process keeps claiming it; try another name.")


def abandoned(holder: dict) -> bool:
    """Whether a claim's process is known to be gone (only this machine's can be checked)."""
    if holder.get("host") != socket.gethostname() or "pid" not in holder:
        return False
    try:
        os.kill(int(holder["pid"]), 0)  # signal 0: exists?
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: alive
        return False
    return False


def release_claim(run_dir: Path) -> None:
    """Give the name back: to ``config.yaml``, which holds it from then on, or to nobody when
    the fit stopped before writing it (an empty directory is removed)."""
    (run_dir / CLAIM).unlink(missing_ok=True)
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()


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
    return unused(run_dir / f"config.{subcommand}-{datetime.now():%Y%m%d-%H%M%S}.yaml").name


def outputs_dir(run_dir: Path, subcommand: str) -> Path:
    """Where a command's reports and predictions go: the run directory for ``fit`` and for
    a command that starts a run; ``outputs/<subcommand>-<time>/`` for a later ``test`` or
    ``predict``, so none overwrites the fit's results or another command's."""
    if subcommand == "fit" or not (run_dir / "config.yaml").exists():
        return run_dir
    return unused(run_dir / "outputs" / f"{subcommand}-{datetime.now():%Y%m%d-%H%M%S}")


def unused(first: Path) -> Path:
    """``first``, or with ``-2``, ``-3``... before its suffix when another command of the
    same second took it."""
    path, n = first, 1
    while path.exists():
        n += 1
        path = first.with_name(f"{first.stem}-{n}{first.suffix}")
    return path


def spec_class(spec: Any) -> type | None:
    """The class a parsed ``class_path``/``init_args`` spec names; None for anything else."""
    if not isinstance(spec, Namespace) or "class_path" not in spec:
        return None
    module, _, name = spec.class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def chosen_for_a_run(dirpath: str | None) -> bool:
    """Whether ``dirpath`` is unset or a folder ``place_callbacks`` chose for a run (its
    directory, its ``checkpoints/`` or an ``outputs/`` folder): a run's saved config names
    them, and a command run from that config chooses its own instead."""
    if not dirpath:
        return True
    path = Path(dirpath)
    run = {"checkpoints": path.parent, "outputs": None}.get(path.name, path)
    if path.parent.name == "outputs":
        run = path.parent.parent
    return run is not None and (run / "config.yaml").is_file()


def place_callbacks(
    callbacks: list | None,
    run_dir: Path,
    outputs: Path,
    has_logger: bool,
    progress_bar: bool = True,
) -> tuple[list, list]:
    """Checkpoints go to ``run_dir/checkpoints``, test reports and predictions to
    ``outputs``; LearningRateMonitor needs a logger; a configured progress bar yields to
    ``--trainer.enable_progress_bar false``.

    Returns the callback specs to keep and notices to print.
    """
    kept, notices = [], []
    for spec in callbacks or []:
        cls = spec_class(spec)
        saves = cls is not None and issubclass(cls, ModelCheckpoint | OnExceptionCheckpoint)
        if saves and chosen_for_a_run(spec.init_args.get("dirpath")):
            spec.init_args.dirpath = str(run_dir / "checkpoints")
        writers = PredictionWriter | TestReports | ValidationReports
        writes = cls is not None and issubclass(cls, writers)
        if writes and chosen_for_a_run(spec.get("init_args", {}).get("dirpath")):
            spec.init_args = spec.get("init_args") or Namespace()
            spec.init_args.dirpath = str(outputs)
        if cls is not None and issubclass(cls, LearningRateMonitor) and not has_logger:
            notices.append("No logger: LearningRateMonitor is off for this run.")
            continue
        if cls is not None and issubclass(cls, ProgressBar) and not progress_bar:
            continue
        kept.append(spec)
    return kept, notices
