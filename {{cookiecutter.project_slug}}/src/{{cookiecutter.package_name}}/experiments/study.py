"""What a sweep and its trials share about the study: its storage, the pruners by name and
the exit code of a pruned fit. Light: the sweep's parent process loads no Lightning."""

from __future__ import annotations

from typing import Any, Literal

PRUNED = 3  # the exit code of a fit the sweep's pruner stopped


def open_storage(storage: str) -> Any:
    """An Optuna storage: a database URL, or the path of a journal file (several processes
    and machines on a shared file system can use one)."""
    try:
        import optuna
    except ImportError as missing:
        raise ImportError("sweep needs Optuna: pip install -e '.[experiments]'") from missing
    if "://" in storage:
        return optuna.storages.RDBStorage(storage)
    backend = optuna.storages.journal.JournalFileBackend(storage)
    return optuna.storages.JournalStorage(backend)


Pruner = Literal["halving", "hyperband", "median", "none"]


def make_pruner(name: Pruner, max_epochs: int) -> Any:
    """Optuna's pruners by name; epochs are the resource. ``halving`` (asynchronous
    successive halving) stops a trial after epoch 1, 3, 9… unless it is in the best third
    of those that got there: a search costs a few full runs, not one per trial."""
    import optuna

    pruners = {
        "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(1, max(max_epochs, 1)),
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        "none": optuna.pruners.NopPruner,
    }
    return pruners[name]()
