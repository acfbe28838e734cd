"""The child's side of ``sweep``: report each validation to the trial, stop when pruned."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from ..experiments.study import Pruner, make_pruner, open_storage


class TrialPruning(Callback):
    """Reports ``monitor`` to an Optuna trial after every validation and stops the fit
    cleanly when the study's pruner says so; ``sweep`` adds it to each trial's fit.

    Only rank 0 talks to the study; its decision is broadcast, so every rank of a
    distributed fit stops at the same epoch. A pruned fit skips its test and exits with
    ``PRUNED`` (see ``cli.main``), which the sweep records as the trial's state: Optuna's own
    ``TrialPruned`` exception would have to cross Lightning's loop and every rank.

    Args:
        storage: The study's storage: a journal file's path or a database URL.
        study_name: The study in that storage.
        trial: The trial's number in the study.
        monitor: The validation metric the study optimises.
        pruner: Which pruner decides (Optuna keeps no pruner in its storage).
    """

    def __init__(
        self,
        storage: str,
        study_name: str,
        trial: int,
        monitor: str = "val/loss",
        pruner: Pruner = "halving",
    ) -> None:
        self.storage, self.study_name = storage, study_name
        self.trial, self.monitor, self.pruner = trial, monitor, pruner
        self.pruned = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero and (value := trainer.callback_metrics.get(self.monitor)):
            epochs = trainer.current_epoch + 1  # the pruner's resource: epochs trained
            prune = self.report(float(value), epochs, trainer.max_epochs)
        if trainer.strategy.broadcast(prune, src=0):
            self.pruned = trainer.should_stop = True
            rank_zero_info(f"Trial {self.trial} pruned after {trainer.current_epoch + 1} epochs.")

    def report(self, value: float, epochs: int, max_epochs: int) -> bool:
        """Record ``value`` after ``epochs`` (a resumed trial's repeats are ignored); prune?"""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = open_storage(self.storage)
        pruner = make_pruner(self.pruner, max_epochs)
        study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=pruner)
        study_id = storage.get_study_id_from_name(self.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.trial)
        trial = optuna.trial.Trial(study, trial_id)
        if epochs not in storage.get_trial(trial_id).intermediate_values:
            trial.report(value, step=epochs)
        return trial.should_prune()


def in_sweep(trainer: L.Trainer) -> bool:
    """Whether this fit is a sweep's trial."""
    return any(isinstance(c, TrialPruning) for c in trainer.callbacks)


def pruned(trainer: L.Trainer | None) -> bool:
    """Whether a sweep's pruner stopped this fit."""
    callbacks = trainer.callbacks if trainer is not None else []
    return any(isinstance(c, TrialPruning) and c.pruned for c in callbacks)
