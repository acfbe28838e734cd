"""Library messages a user can't act on, silenced precisely (by message and module), so
that what a run prints is worth reading. Our own causes are fixed where they arise."""

from __future__ import annotations

import logging
import warnings
from typing import Any

from lightning.pytorch.loggers import WandbLogger

# (message, module) regexes of warnings that library code raises about library code.
LIBRARY_WARNINGS = [
    # torchdata's StatefulDataLoader calls a deprecated torch function, once per loader.
    (r"'set_vital' is deprecated", r"torchdata\."),
    # Lightning's pytree helper uses a torch API that torch deprecated, once per loader.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\."),
    # torch.onnx, when one batch dimension is shared by a table's column inputs (as meant).
    (r"# The axis name: \w+ will not be used, since it shares", r"torch\.onnx\."),
]


class DropAdverts(logging.Filter):
    """Lightning advertises a hosted logger on every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def silence_library_noise() -> None:
    """Install the filters once per process (the command line's entry point calls it)."""
    for message, module in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, DropAdverts) for f in log.filters):
        log.addFilter(DropAdverts())


def quiet_wandb(loggers: list[Any]) -> None:
    """Before W&B starts: Lightning passes ``anonymous=None``, which W&B warns about on
    every run; offline, W&B's own lines (a git warning, coloured sync advice) repeat what
    the run already printed, so it is silent. The settings live in WandbLogger's private
    ``_wandb_init``, the keyword arguments of its lazy ``wandb.init``."""
    for logger in loggers:
        if not isinstance(logger, WandbLogger) or logger._experiment is not None:
            continue
        if logger._wandb_init.get("anonymous") is None:
            logger._wandb_init.pop("anonymous", None)
        if logger._offline and logger._wandb_init.get("settings") is None:
            import wandb  # only where W&B logs

            logger._wandb_init["settings"] = wandb.Settings(silent=True)
