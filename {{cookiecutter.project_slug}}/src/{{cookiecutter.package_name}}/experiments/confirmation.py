"""``sweep --confirm_seeds N``: the top trials trained again with N other seeds before one is
named best, so a lucky seed (or split: the data's seed follows ``seed_everything``) can't win.

A confirmation is a trial of the same study, enqueued with its search trial's values and
marked by ``user_attrs`` (``confirms``: that trial's number, ``seed``); it runs, resumes and
reports like any trial, unpruned.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState


def searched(study: optuna.Study) -> list[FrozenTrial]:
    """The finished search trials (no confirmations), best first."""
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    done = [t for t in done if "confirms" not in t.user_attrs]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: t.value, reverse=maximize)


def queue(study: optuna.Study, top: int, seeds: int, seed_of: Callable[[int], int]) -> int:
    """Enqueue what is missing of the top ``top`` trials' confirmations; their total count.
    ``seed_of(number)``: the seed a trial ran with; a confirmation runs the next ``seeds``."""
    queued = {(t.user_attrs["confirms"], t.user_attrs["seed"]) for t in confirmations(study)}
    wanted = [
        (trial, seed)
        for trial in searched(study)[:top]
        for seed in range(seed_of(trial.number) + 1, seed_of(trial.number) + 1 + seeds)
    ]
    for trial, seed in wanted:
        if (trial.number, seed) not in queued:
            attrs = {"confirms": trial.number, "seed": seed}
            study.enqueue_trial(trial.params, user_attrs=attrs)
    return len(wanted)


def confirmations(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.trials if "confirms" in t.user_attrs]


def seed_values(study: optuna.Study) -> dict[int, list[float]]:
    """Each confirmed trial's values: its own first, then its confirmations'."""
    values: dict[int, list[float]] = {}
    for trial in searched(study):
        values[trial.number] = [trial.value]
    for confirming in confirmations(study):
        if confirming.state == TrialState.COMPLETE:
            values[confirming.user_attrs["confirms"]].append(confirming.value)
    return {number: v for number, v in values.items() if len(v) > 1}


def best(study: optuna.Study) -> FrozenTrial | None:
    """The search trial with the best mean over its seeds; without confirmations, the best."""
    ranked = searched(study)
    confirmed = seed_values(study)
    if not confirmed:
        return ranked[0] if ranked else None
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    choose = max if maximize else min
    number = choose(confirmed, key=lambda n: statistics.fmean(confirmed[n]))
    return study.trials[number]
