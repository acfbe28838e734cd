"""Experiment loggers: pointed at the run directory, and W&B kept from ever prompting."""

from __future__ import annotations

import hashlib
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from .rundir import spec_class

# Where each logger writes inside the run directory, and its version folder. TensorBoard
# keeps one folder (a resumed run appends event files to the same curves); CSVLogger would
# delete an existing metrics.csv, so each command on the run gets its own version_N/.
SUBDIRS = {CSVLogger: ("csv", None), TensorBoardLogger: ("tensorboard", "")}


def wandb_has_credentials(environ: Mapping[str, str] = os.environ) -> bool:
    """True when W&B can log in without asking: an API key in the environment or in netrc."""
    if environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_offline_reason(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why W&B must run offline (a one-line notice), or None when it may go online."""
    if environ.get("WANDB_MODE") in {"offline", "disabled", "dryrun"}:
        return None  # the user chose already; wandb honours WANDB_MODE itself
    if wandb_has_credentials(environ):
        return None
    return "W&B: no API key found (WANDB_API_KEY or `wandb login`), so logging offline."


def place_loggers(loggers: Any, run_dir: Path) -> list[str]:
    """Set each logger's output directory inside ``run_dir``; return notices to print.

    ``loggers`` is the parsed ``trainer.logger`` value: a class spec, a list of them, or a
    bool. W&B gets a run id derived from ``run_dir`` so a resumed run continues its W&B run.
    """
    notices = []
    for spec in loggers if isinstance(loggers, list) else [loggers]:
        cls = spec_class(spec)
        if cls is None:
            continue
        args = spec.init_args
        if issubclass(cls, WandbLogger):
            args.save_dir = str(run_dir)
            args.name = args.get("name") or run_dir.name
            digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]
            args.id = args.get("id") or f"{run_dir.name}-{digest}"
            mode = os.environ.get("WANDB_MODE")
            if mode in {"offline", "dryrun"}:  # the user's choice, said as W&B would
                reason = f"W&B: logging offline (WANDB_MODE={mode})."
            else:
                reason = wandb_offline_reason()
            if not args.get("offline") and reason:
                args.offline = True
                notices.append(
                    f"{reason} Upload later: wandb sync {run_dir / 'wandb'}/offline-run-*"
                )
        for base, (subdir, version) in SUBDIRS.items():
            if issubclass(cls, base):
                args.save_dir, args.name, args.version = str(run_dir), subdir, version
    return notices
