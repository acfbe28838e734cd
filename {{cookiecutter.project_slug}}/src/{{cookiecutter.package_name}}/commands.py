"""The command line's front door: the list of commands and the experiments answer without
loading the deep-learning stack (``import lightning`` alone takes seconds); every other
command goes on to ``cli``, Lightning's command line."""

from __future__ import annotations

import sys
from pathlib import Path

from . import experiments  # light: each experiment's module is imported when it runs

# One line each for ``--help``: Lightning's own would be its Trainer docstrings, cut short.
SUBCOMMAND_HELP = {
    "fit": "Train, then test the best checkpoint.",
    "validate": "Evaluate a checkpoint on its validation split.",
    "test": "Evaluate a checkpoint on its test split.",
    "predict": "Predict new inputs (default: the test split).",
    "tune": "Suggest a learning rate (Lightning's LR finder).",
    "profile": "Check and profile the data, without training.",
    "benchmark": "Time loading against training: what limits speed.",
    "export": "Export a checkpoint (ONNX, torch.export), checked.",
    "serve": "Serve a checkpoint's predictions over HTTP.",
    "shard": "Write images as LitData shards for streaming.",
}
# Commands that run fits in child processes (experiments/), listed below the subcommands.
EXPERIMENT_HELP = {
    "sweep": "Search hyperparameters (Optuna), one fit per trial.",
    "cv": "K-fold cross-validation; out-of-fold predictions, suspect labels.",
}
HERE = Path(__file__).resolve().parent


def program() -> str:
    """The command as the user typed it: the console script, or ``python -m <package>``."""
    name = Path(sys.argv[0]).name
    return f"python -m {__package__}" if name in ("__main__.py", "-c", "") else name


def subcommands() -> list[str]:
    """This project's subcommands (``shard`` only where images are: its module is there)."""
    present = {"shard": (HERE / "data" / "shards.py").is_file()}
    return [name for name in SUBCOMMAND_HELP if present.get(name, True)]


def front_page(prog: str) -> str:
    """What ``<project> --help`` prints: each command on one line."""
    summary = "Train, evaluate, export and serve the project's models."
    commands = "".join(f"\n  {name:<10} {SUBCOMMAND_HELP[name]}" for name in subcommands())
    experiments = "".join(f"\n  {name:<10} {line}" for name, line in EXPERIMENT_HELP.items())
    return (
        f"usage: {prog} <command> [options]   (each command's options: {prog} <command> --help)\n\n"
        f"{summary}\n\ncommands:{commands}\n\nexperiments:{experiments}\n"
    )


def main() -> None:
    """Console script and ``python -m`` entry point."""
    args, prog = sys.argv[1:], program()
    if args[:1] and args[0] in experiments.COMMANDS:
        raise SystemExit(experiments.run(args[0], f"{prog} {args[0]}", args[1:]))
    if args in ([], ["-h"], ["--help"]):
        print(front_page(prog), file=sys.stdout if args else sys.stderr, end="")
        raise SystemExit(0 if args else 2)  # no command: argparse's exit code for a mistake
    from .cli import main as run_subcommand

    run_subcommand()
