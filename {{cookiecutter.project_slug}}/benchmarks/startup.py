"""How long each command takes to start, as whole processes, beside importing the stack.

    python benchmarks/startup.py [--repeats 5] [--run runs/NAME]

Times each command from launch to exit (the median of ``repeats``, the commands taking turns
so a machine that slows down slows them all) and divides by the time of
``python -c "import torch, lightning"`` measured in the same run: the ratio says what a
command costs beyond loading the stack, or how much of it a command avoids. With ``--run``
(a finished fit's run directory) it also times ``validate`` on its last checkpoint, one
validation batch.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

PACKAGE = "{{ cookiecutter.package_name }}"
STACK = [sys.executable, "-c", "import torch, lightning"]


def commands(run: Path | None) -> dict[str, list[str]]:
    project = [sys.executable, "-m", PACKAGE]
    timed = {
        "import torch, lightning": STACK,
        "--help": [*project, "--help"],
        "sweep --help": [*project, "sweep", "--help"],
        "fit --help": [*project, "fit", "--help"],
        "fit --print_config": [*project, "fit", "--config=configs/default.yaml", "--print_config"],
    }
    if run is not None:
        checkpoint = run / "checkpoints" / "last.ckpt"
        timed["validate (1 batch)"] = [
            *project, "validate", f"--config={run / 'config.yaml'}", f"--ckpt_path={checkpoint}",
            "--trainer.limit_val_batches=1", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
        ]  # fmt: skip
    return timed


def seconds(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--run", type=Path, help="a finished fit's run directory")
    args = parser.parse_args()
    project = Path(__file__).resolve().parents[1]
    timed = commands(args.run.resolve() if args.run else None)
    times = {name: [] for name in timed}
    for _ in range(args.repeats):
        for name, command in timed.items():
            times[name].append(seconds(command, project))
    medians = {name: statistics.median(values) for name, values in times.items()}
    stack = medians["import torch, lightning"]
    print(f"{'command':<24} {'median s':>9} {'/ import':>9}   ({args.repeats} repeats)")
    for name, median in medians.items():
        print(f"{name:<24} {median:>9.2f} {median / stack:>9.2f}")


if __name__ == "__main__":
    main()
