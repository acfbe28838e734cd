"""Run ``fit`` in child processes: what ``sweep`` and ``cv`` are built from.

A child is the command a user would type, so its run directory, config and resume are the
usual ones. The parent forwards SIGTERM and Ctrl+C to its children, waits for them to save
a resumable checkpoint, then exits with 143: the same command run again picks up there.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

PACKAGE = __package__.rpartition(".")[0]
STOPPED = 128 + signal.SIGTERM  # the exit code of a run stopped by SIGTERM


def experiment_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every experiment takes; the ones it doesn't know go to each ``fit``."""
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    parser.epilog = "Any other option (e.g. --trainer.max_epochs 5) is passed to every fit."
    parser.add_argument(
        "--config", action="append", default=[], help="A fit config (repeatable), as for fit."
    )
    parser.add_argument("--run.root", dest="root", type=Path, default=Path("runs"))
    parser.add_argument(
        "--run.name", dest="name", help="The experiment's directory under --run.root; "
        "run the same command again to resume it. Default: time and subcommand."
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=1,
        help="Fits at once. With GPUs each worker gets its own (CUDA_VISIBLE_DEVICES).",
    )  # fmt: skip
    return parser


def experiment_dir(root: Path, name: str | None, subcommand: str) -> Path:
    return root / (name or f"{datetime.now():%Y%m%d-%H%M%S}-{subcommand}")


def fit_command(configs: list[str], forwarded: list[str], run_dir: Path) -> list[str]:
    """A new ``fit`` writing to ``run_dir``; ``forwarded`` overrides the configs."""
    command = [sys.executable, "-m", PACKAGE, "fit", *(f"--config={c}" for c in configs)]
    return [*command, *forwarded, f"--run.root={run_dir.parent}", f"--run.name={run_dir.name}"]


def resume_command(run_dir: Path) -> list[str]:
    """Resume a stopped ``fit`` from its last checkpoint (from the start if it has none)."""
    config = run_dir / "config.yaml"
    return [sys.executable, "-m", PACKAGE, "fit", f"--config={config}", "--ckpt_path=last"]


def device_env(worker: int, workers: int) -> dict[str, str]:
    """One GPU per worker when several run at once; a single worker sees every device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if workers < 2:
        return {}
    if visible is not None:
        devices = [d for d in visible.split(",") if d]
    else:
        import torch  # only here: the parent needs no deep-learning stack otherwise

        devices = [str(i) for i in range(torch.cuda.device_count())]
    return {"CUDA_VISIBLE_DEVICES": devices[worker % len(devices)]} if devices else {}


class Children:
    """The live child processes, stopped together (SIGTERM, then wait) when the parent is
    sent SIGTERM or Ctrl+C. Use as a context manager in the main thread."""

    def __init__(self) -> None:
        self.live: set[subprocess.Popen] = set()
        self.stopping = False
        self.lock = threading.Lock()
        self.previous: dict[int, object] = {}

    def __enter__(self) -> Children:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.previous[signum] = signal.signal(signum, self.stop)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def stop(self, signum: int = signal.SIGTERM, frame: object = None) -> None:
        with self.lock:
            self.stopping = True
            for child in self.live:
                child.send_signal(signal.SIGTERM)  # each saves a resumable last.ckpt

    def run(self, command: list[str], log: Path, env: dict[str, str] | None = None) -> int:
        """Run ``command`` to its end with its output in ``log``; its exit code."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as out, self.lock:
            if self.stopping:
                return STOPPED
            child = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # our stop() forwards signals; a terminal's don't race it
            )  # fmt: skip
            self.live.add(child)
        code = child.wait()
        with self.lock:
            self.live.discard(child)
        return code


def in_parallel(work: Callable[[int], None], workers: int) -> None:
    """``work(worker)`` in ``workers`` threads at once; each returns when nothing is left.
    Threads suffice: each only waits on its child process. A worker's error is raised here."""
    errors: list[BaseException] = []

    def guarded(worker: int) -> None:
        try:
            work(worker)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.5)  # wakes up so that the main thread takes signals
    if errors:
        raise errors[0]
