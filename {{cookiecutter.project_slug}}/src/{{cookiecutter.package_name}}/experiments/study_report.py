"""What a sweep leaves behind: ``trials.csv``, ``best.yaml`` and two plots."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt
import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from . import confirmation


def describe(trial: FrozenTrial, metric: str) -> str:
    value = f" {metric} {trial.value:.4g}" if trial.value is not None else ""
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    params = ", ".join(f"{k.rsplit('.', 1)[-1]}={v:.3g}" if isinstance(v, float) else
                       f"{k.rsplit('.', 1)[-1]}={v}" for k, v in trial.params.items())  # fmt: skip
    return f"Trial {trial.number} {trial.state.name}{value} in {seconds:.0f} s ({params})"


def write(study: optuna.Study, sweep_dir: Path, metric: str, root: Path, project: str) -> None:
    trials = study.trials
    write_trials_csv(trials, sweep_dir / "trials.csv")
    (sweep_dir / "plots").mkdir(exist_ok=True)
    plot_history(study, metric, sweep_dir / "plots" / "optimization_history.png")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(complete) > 1:
        plot_importances(study, sweep_dir / "plots" / "param_importances.png")
    if confirmed := confirmation.seed_values(study):
        write_confirmations(confirmed, sweep_dir / "confirmations.csv")
    if best := confirmation.best(study):
        path = write_best_config(best, sweep_dir, metric, root)
        print(f"Best: {describe(best, metric)}")
        print(f"Train it: {project} fit --config {path}")
    counts = {state.name: sum(t.state == state for t in trials) for state in TrialState}
    print(f"Trials: {', '.join(f'{n} {s.lower()}' for s, n in counts.items() if n)}")
    print(f"Sweep report: {sweep_dir / 'trials.csv'}, plots in {sweep_dir / 'plots'}")


def write_trials_csv(trials: list[FrozenTrial], path: Path) -> None:
    keys = sorted({key for trial in trials for key in trial.params})
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["number", "state", "value", "duration_s", *keys])
        for t in trials:
            seconds = f"{t.duration.total_seconds():.1f}" if t.duration else ""
            row = [t.number, t.state.name, "" if t.value is None else t.value, seconds]
            writer.writerow(row + [t.params.get(key, "") for key in keys])


def write_confirmations(confirmed: dict[int, list[float]], path: Path) -> None:
    """``--confirm_seeds``: each confirmed trial's value per seed, their mean and spread."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["trial", "mean", "std", "values"])
        for number, values in confirmed.items():
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            row = [number, statistics.fmean(values), spread, " ".join(f"{v:.6g}" for v in values)]
            writer.writerow(row)


def write_best_config(best: FrozenTrial, sweep_dir: Path, metric: str, root: Path) -> Path:
    """The best trial's own config, as a new run's: ``fit --config best.yaml`` retrains it
    with the same seed, without the sweep's pruning (or a cv trial's folds)."""
    config = yaml.safe_load(trial_config(sweep_dir / "trials" / str(best.number)).read_text())
    if "folds" in config["data"].get("init_args", {}):
        config["data"]["init_args"] |= {"folds": None, "fold": None}
    callbacks = config["trainer"].get("callbacks") or []
    config["trainer"]["callbacks"] = [
        c for c in callbacks if not str(c.get("class_path", "")).endswith(".TrialPruning")
    ]
    config["run"] = {"root": str(root), "name": None}
    config["ckpt_path"] = None
    path = sweep_dir / "best.yaml"
    header = f"# Trial {best.number} of sweep {sweep_dir.name}: {metric} {best.value:.6g}\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return path


def trial_config(trial_dir: Path) -> Path:
    """A trial's fit config: its own, or (``--objective cv``) its first fold's."""
    own = trial_dir / "config.yaml"
    return own if own.is_file() else trial_dir / "folds" / "0" / "config.yaml"


def plot_history(study: optuna.Study, metric: str, path: Path) -> None:
    """Each finished trial's value, and the best so far."""
    figure, axes = plt.subplots(figsize=(6, 4))
    for state, marker in ((TrialState.COMPLETE, "o"), (TrialState.PRUNED, "x")):
        shown = [t for t in study.trials if t.state == state and t.value is not None]
        axes.scatter([t.number for t in shown], [t.value for t in shown], marker=marker,
                     label=state.name.lower())  # fmt: skip
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    better = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    best = [better(t.value for t in complete[: i + 1]) for i in range(len(complete))]
    axes.step([t.number for t in complete], best, where="post", label="best so far")
    axes.set(xlabel="trial", ylabel=metric, title="Optimisation history")
    axes.legend()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def plot_importances(study: optuna.Study, path: Path) -> None:
    """How much of the metric's variation each parameter explains (Optuna's fANOVA)."""
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as error:  # e.g. every trial sampled the same values
        print(f"No parameter importances: {error}")
        return
    figure, axes = plt.subplots(figsize=(6, 1 + 0.4 * len(importances)))
    axes.barh(list(importances)[::-1], list(importances.values())[::-1])
    axes.set(xlabel="importance", title="Parameter importances")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
