"""``sweep``: search hyperparameters with Optuna, one ``fit`` per trial, pruned and resumable.

Each trial is a ``fit`` in its own process and run directory (``runs/NAME/trials/<n>/``)
with the sampled values as options, so a trial is an ordinary run: provenance, strategy
profiles (a DDP trial samples once, here) and SIGTERM resume hold inside it. The study lives
in ``runs/NAME/journal.log`` (or a database): several workers, processes or SLURM array
tasks can share it. Run the same command again after a stop: interrupted trials resume from
their checkpoints with their numbers and values, finished ones are kept.

With ``--objective cv`` a trial is a ``cv`` (``runs/NAME/trials/<n>/folds/<k>/``) scored by
its folds' mean: slower, and not pruned, but one lucky split can't pick the winner.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, get_args

import numpy as np
import optuna
import yaml
from optuna.trial import TrialState

from . import confirmation, study_report
from .launch import (
    PACKAGE,
    STOPPED,
    Children,
    device_env,
    experiment_dir,
    experiment_parser,
    fit_command,
    in_parallel,
    resume_command,
)
from .space import SpaceError, centred_on_lr_finder, overrides, read_space
from .study import PRUNED, Pruner, open_storage

# What must not change when the same sweep is run again: its trials would not compare.
STARTED = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
SETTINGS = ("configs", "forwarded", "space", "metric", "direction", "pruner", "objective", "folds")


def sweep_parser(prog: str) -> argparse.ArgumentParser:
    parser = experiment_parser(prog, __doc__.splitlines()[0])
    add = parser.add_argument
    add("--space", type=Path, default=Path("configs/sweep/space.yaml"), help="The search space.")
    add("--trials", type=int, default=20, help="Trials in the study, counting earlier runs.")
    add("--metric", default="val/loss", help="The validation metric to optimise.")
    add("--direction", choices=["minimize", "maximize"], default="minimize")
    add("--pruner", choices=get_args(Pruner), default="halving", help="Stops hopeless trials.")
    add(
        "--objective",
        choices=["split", "cv"],
        default="split",
        help="split: the metric on the validation split; cv: its mean over --folds folds.",
    )
    add("--folds", type=int, default=5, help="Folds of each trial's cv (--objective cv).")
    add("--storage", help="A database URL (several machines); default runs/NAME/journal.log.")
    add("--seed", type=int, default=42, help="The sampler's seed.")
    add("--lr_finder", type=Path, help="A tune run's lr_finder.json: search model.lr near it.")
    add(
        "--confirm_seeds",
        type=int,
        default=0,
        help="Train the top trials again with this many other seeds; best by the mean.",
    )
    add("--confirm_top", type=int, default=3, help="How many top trials --confirm_seeds trains.")
    return parser


class Sweep:
    """The study and the trials this process runs for it."""

    def __init__(self, args: argparse.Namespace, forwarded: list[str]) -> None:
        self.dir = experiment_dir(args.root, args.name, "sweep").resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        if args.objective == "cv":
            args.pruner = "none"  # a cv reports once, at its end: nothing to prune on
        self.args, self.forwarded = args, forwarded
        space = read_space(args.space)
        self.space = centred_on_lr_finder(space, args.lr_finder) if args.lr_finder else space
        self.storage = args.storage or str(self.dir / "journal.log")
        self.study = optuna.create_study(
            study_name=self.dir.name,
            storage=open_storage(self.storage),
            direction=args.direction,
            load_if_exists=True,
        )
        # Reseeded by the trials so far, so a resumed sweep doesn't repeat earlier draws.
        seed = int(np.random.SeedSequence([args.seed, len(self.study.trials)]).generate_state(1)[0])
        self.study.sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        self.children = Children()
        self.limit = args.trials  # trials to start; confirmations raise it
        self.lock = threading.Lock()

    def settings(self) -> dict:
        space = {key: repr(value) for key, value in self.space.items()}
        args = vars(self.args)
        return {"configs": args["config"], "forwarded": self.forwarded, "space": space} | {
            key: args[key] for key in ("metric", "direction", "pruner", "objective", "folds")
        }

    def check_settings(self) -> None:
        """The first run records the sweep's settings; a later run must repeat them."""
        path = self.dir / "sweep.json"
        settings = self.settings()
        if not path.exists():
            path.write_text(json.dumps(settings, indent=2) + "\n")
            return
        recorded = json.loads(path.read_text())
        changed = [key for key in SETTINGS if recorded.get(key) != settings[key]]
        if changed:
            raise SpaceError(
                f"{self.dir} is a sweep with other {', '.join(changed)} ({path}): run the same "
                "command to resume it, or give a new --run.name for a new sweep."
            )

    def next_trial(self) -> tuple[int, IO] | None:
        """An interrupted trial no worker holds, else a new one while the study has room;
        with the lock that marks it as this worker's."""
        with self.lock, locked(self.dir / "locks" / "ask"):
            for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if (held := hold(self.dir / "locks" / str(trial.number))) is not None:
                    print(f"Trial {trial.number}: resuming", flush=True)
                    return trial.number, held
            # Trials enqueued by hand (study.enqueue_trial) wait their turn in the count.
            if len(self.study.get_trials(deepcopy=False, states=STARTED)) >= self.limit:
                return None
            trial = self.study.ask(self.space)
            values = overrides(trial.params)
            if (seed := trial.user_attrs.get("seed")) is not None:  # a confirmation's
                values.append(f"--seed_everything={seed}")
            trial.set_user_attr("overrides", values)
            return trial.number, hold(self.dir / "locks" / str(trial.number))

    def command(self, number: int) -> list[str]:
        run_dir = self.dir / "trials" / str(number)
        values = self.study.trials[number].user_attrs["overrides"]
        if self.args.objective == "cv":  # the same command resumes a cv
            return cv_command(self.args, [*self.forwarded, *values], run_dir)
        if (run_dir / "config.yaml").exists():
            return resume_command(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)  # claimed, never started: nothing to keep
        return fit_command(
            self.args.config, [*self.forwarded, *values, self.pruning(number)], run_dir
        )

    def pruning(self, number: int) -> str:
        """The option that adds this trial's TrialPruning callback to its fit."""
        init = {"storage": self.storage, "study_name": self.dir.name, "trial": number}
        confirming = "confirms" in self.study.trials[number].user_attrs
        pruner = "none" if confirming else self.args.pruner
        init |= {"monitor": self.args.metric, "pruner": pruner}
        callback = {"class_path": f"{PACKAGE}.callbacks.TrialPruning", "init_args": init}
        return f"--trainer.callbacks+={json.dumps(callback)}"

    def seed_of(self, number: int) -> int:
        """The seed trial ``number`` ran with (its config's ``seed_everything``)."""
        config = study_report.trial_config(self.dir / "trials" / str(number))
        return int(yaml.safe_load(config.read_text())["seed_everything"])

    def work(self, worker: int) -> None:
        # W&B shows the trials as one group, named for the sweep (its own variable).
        env = device_env(worker, self.args.workers) | {"WANDB_RUN_GROUP": self.dir.name}
        while not self.children.stopping and (claimed := self.next_trial()) is not None:
            number, held = claimed
            log = self.dir / "logs" / f"trial-{number}.log"
            try:
                code = self.children.run(self.command(number), log, env)
                self.record(number, code, log)
            finally:
                held.close()

    def record(self, number: int, code: int, log: Path) -> None:
        """Tell the study how the trial's fit ended, from its exit code."""
        trial = self.study.trials[number]
        reported = list(trial.intermediate_values.values())
        if self.args.objective == "cv" and code == 0:
            scores = json.loads((self.dir / "trials" / str(number) / "cv_metrics.json").read_text())
            reported = [scores[self.args.metric]["mean"]]
        if code == STOPPED and self.children.stopping:
            return  # still RUNNING: the next run of this sweep resumes it
        if code == 0 and reported:
            best = min(reported) if self.args.direction == "minimize" else max(reported)
            self.study.tell(number, best)
        elif code == PRUNED:
            self.study.tell(number, state=TrialState.PRUNED)
        else:
            self.study.tell(number, state=TrialState.FAIL)
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            print(f"Trial {number} failed (exit code {code}): {log}\n  " + "\n  ".join(tail),
                  file=sys.stderr, flush=True)  # fmt: skip
            return
        print(study_report.describe(self.study.trials[number], self.args.metric), flush=True)


def cv_command(args: argparse.Namespace, forwarded: list[str], run_dir: Path) -> list[str]:
    """A ``cv`` of one trial in ``run_dir``, its folds one after another."""
    command = [sys.executable, "-m", PACKAGE, "cv", *(f"--config={c}" for c in args.config)]
    experiment = [
        f"--folds={args.folds}",
        f"--run.root={run_dir.parent}",
        f"--run.name={run_dir.name}",
    ]
    return [*command, *experiment, *forwarded]


def hold(path: Path) -> IO | None:
    """An exclusive lock on ``path`` if no one else holds it: the worker running a trial
    holds its lock, so a trial left RUNNING with a free lock was interrupted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    file = path.open("a")
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        return None
    return file


@contextmanager
def locked(path: Path):
    """``path`` locked for as long as the block runs, waiting for other processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        yield


def main(prog: str, argv: list[str]) -> int:
    args, forwarded = sweep_parser(prog).parse_known_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we print each trial's end
    try:
        sweep = Sweep(args, forwarded)
        sweep.check_settings()
    except SpaceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Sweep {sweep.dir}: {args.trials} trials, {args.workers} at a time", flush=True)
    with sweep.children:
        in_parallel(sweep.work, args.workers)
        if args.confirm_seeds and not sweep.children.stopping:
            sweep.limit = args.trials + confirmation.queue(
                sweep.study, args.confirm_top, args.confirm_seeds, sweep.seed_of
            )
            print(f"Confirming the top {args.confirm_top} with {args.confirm_seeds} more seeds")
            in_parallel(sweep.work, args.workers)
    project = prog.rsplit(" ", 1)[0]
    study_report.write(sweep.study, sweep.dir, args.metric, args.root, project)
    if sweep.children.stopping:
        print(f"Stopped. The same command resumes the sweep: {prog} {' '.join(argv)}")
        return STOPPED
    return 0
