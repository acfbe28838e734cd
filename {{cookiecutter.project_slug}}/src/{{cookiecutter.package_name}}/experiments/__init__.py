"""Experiments beyond one run. Each trial or fold is a ``fit`` in its own process and run
directory, so everything a run does (provenance, SIGTERM resume, strategy profiles) holds
inside an experiment unchanged."""

from __future__ import annotations

import importlib
import importlib.util
import sys

# Subcommand -> module of this package with ``main(prog, args) -> exit code``. Imported only
# when asked for, so the other commands don't load Optuna or cleanlab.
COMMANDS = {"sweep": "sweep", "cv": "cross_validation"}


# Checked before anything runs: cv needs cleanlab only after its last fold.
NEEDS = {"sweep": ("optuna",), "cv": ("cleanlab",)}


def run(command: str, prog: str, args: list[str]) -> int:
    missing = [name for name in NEEDS[command] if importlib.util.find_spec(name) is None]
    if missing:
        print(f"error: {prog} needs {', '.join(missing)}: pip install -e '.[experiments]'",
              file=sys.stderr)  # fmt: skip
        return 2
    return importlib.import_module(f".{COMMANDS[command]}", __name__).main(prog, args)
