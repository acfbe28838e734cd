"""Experiments beyond one run. Each trial or fold is a ``fit`` in its own process and run
directory, so everything a run does (provenance, SIGTERM resume, strategy profiles) holds
inside an experiment unchanged."""

from __future__ import annotations

import importlib

# Subcommand -> module of this package with ``main(prog, args) -> exit code``. Imported only
# when asked for, so the other commands don't load Optuna or cleanlab.
COMMANDS = {"sweep": "sweep", "cv": "cross_validation"}


def run(command: str, prog: str, args: list[str]) -> int:
    return importlib.import_module(f".{COMMANDS[command]}", __name__).main(prog, args)
