"""Stop a run at any moment and continue it exactly where it was."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class Resumable(OnExceptionCheckpoint):
    """A checkpoint where the run was when SIGTERM or Ctrl+C stopped it, and the random
    generators' states in every checkpoint.

    An orchestrator's SIGTERM (preemption, a cancelled job) or Ctrl+C saves
    ``checkpoints/last.ckpt`` with the loop's position and the loader's state, so
    ``fit --ckpt_path last`` continues from the next batch, and prints how to resume. Stopped
    during a validation, the checkpoint says so, and the resumed run runs it again (its partial
    sums are in no checkpoint). Other exceptions save nothing: they may strike halfway through
    an update.

    The states of torch's (CPU and CUDA), NumPy's and Python's generators travel in each
    checkpoint and come back on resume, so dropout and on-device augmentation continue the same
    streams; the training order and per-sample augmentation in loader workers follow from the
    seed, the epoch and the sample (``data/sampling.py``, ``data/augment.py``). Resumed,
    deterministic training ends with the weights an uninterrupted run has, with or without
    workers. It can't where the uninterrupted run isn't repeatable either (non-deterministic
    GPU kernels), when the resume changes the batch size, the devices or ``overfit_batches``,
    or with LitData's streaming loader, which draws in its own workers.

    Args:
        dirpath: Where the checkpoint goes; None: the run directory's ``checkpoints/``.
        filename: Without ``.ckpt``; "last" is what ``--ckpt_path last`` looks for.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last") -> None:
        super().__init__(dirpath or "checkpoints", filename)
        self.stopped_in_validation = False

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException | KeyboardInterrupt):
            return
        self.stopped_in_validation = trainer.validating and not trainer.sanity_checking
        claim_last(trainer, Path(self.ckpt_path))
        try:
            trainer.save_checkpoint(self.ckpt_path)
        finally:
            self.stopped_in_validation = False
        signal = "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl+C (SIGINT)"
        during = " during validation" if trainer.validating else ""
        run_dir = Path(trainer.default_root_dir)
        rank_zero_info(
            f"Stopped by {signal}{during} at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}: saved {self.ckpt_path}. Resume with: python -m "
            f"{__name__.partition('.')[0]} fit --config {run_dir / 'config.yaml'} --ckpt_path last"
        )

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.stopped_in_validation:
            validation_not_run(checkpoint["loops"]["fit_loop"])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loop = trainer.fit_loop
        restart = False
        # Lightning bug #20550: once configure_optimizers reads estimated_stepping_batches
        # (OneCycle does), the train loader and its iterator are made before the checkpoint
        # is restored, and the loader position it saved is never loaded. Load it.
        if loop.restarting and loop._combined_loader_states_to_load:
            loop._load_combined_loader_states()
            restart = True
        # Resumed at an epoch's end, the iterator was made (and loader workers were handed
        # their first samples) while the sampler still held the finished epoch: Lightning
        # tells it the new epoch only afterwards, and then draws the old epoch's order again.
        epoch = loop.epoch_progress.current.processed  # what Lightning's set_epoch will say
        for loader in loop._combined_loader.flattened if loop._combined_loader else []:
            sampler = getattr(loader, "sampler", None)
            if getattr(sampler, "epoch", epoch) != epoch and hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
                restart = True
        if restart:  # start the iterator again from there, before the first batch is drawn
            iter(loop._data_fetcher)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Keep the checkpoint (Lightning's callback deletes it once a fit ends)."""

    def state_dict(self) -> dict[str, Any]:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        name, keys, position, has_gauss, gauss = np.random.get_state()
        return {  # tensors and plain values only: checkpoints load with weights_only=True
            "torch": torch.get_rng_state(),
            "cuda": cuda,
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:  # a checkpoint saved without this callback
            return
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and len(state_dict["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        name, keys, position, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        random.setstate(state_dict["python"])


def claim_last(trainer: L.Trainer, path: Path) -> None:
    """Tell each ModelCheckpoint whose ``save_last`` file is ``path`` that it wrote it.

    Stopped before its first save, a ModelCheckpoint takes a ``last.ckpt`` it did not write
    for someone else's: resumed, it would save ``last-v1.ckpt`` beside it, and the next
    ``--ckpt_path last`` would have two to choose from.
    """
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
            name = f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
            if (Path(callback.dirpath) / name).resolve() == path.resolve():
                callback.last_model_path = str(path)


def validation_not_run(fit_loop: dict[str, Any]) -> None:
    """Mark the validation a signal stopped as started but not one batch done, in a
    checkpoint's fit-loop state, so that resuming runs it again from its first batch.

    As saved, the loop's counters say its last batch completed, which Lightning takes for a
    finished validation: resumed, it skips it, and the epoch ends without ``val/loss``, which
    EarlyStopping and ModelCheckpoint then refuse. Its partial sums are lost either way (they
    are in no checkpoint), so it must run again from the start to give the same metrics.
    """
    progress = fit_loop["epoch_loop.val_loop.batch_progress"]
    total, current = progress["total"], progress["current"]
    before = total["completed"] - current["completed"]  # batches of earlier validations
    # Lightning reads ready == started == processed + 1 == completed + 1 as "mid-validation".
    progress["total"] = {"ready": before + 1, "started": before + 1} | dict.fromkeys(
        ("processed", "completed"), before
    )
    progress["current"] = {"ready": 1, "started": 1, "processed": 0, "completed": 0}
    progress["is_last_batch"] = False
