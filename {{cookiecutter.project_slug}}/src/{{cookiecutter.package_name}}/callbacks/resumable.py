"""Stop a run at any moment and continue it exactly where it was."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import OnExceptionCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class Resumable(OnExceptionCheckpoint):
    """A checkpoint where the run was when SIGTERM or Ctrl+C stopped it, and the random
    generators' states in every checkpoint.

    An orchestrator's SIGTERM (preemption, a cancelled job) or Ctrl+C mid-epoch saves
    ``checkpoints/last.ckpt`` with the loop's position and the loader's state, so
    ``fit --ckpt_path last`` continues from the next batch, and prints how to resume. Other
    exceptions save nothing: they may strike halfway through an update.

    The states of torch's (CPU and CUDA), NumPy's and Python's generators travel in each
    checkpoint and come back on resume, so dropout and augmentation continue the same random
    streams: resumed, deterministic training ends with the weights an uninterrupted run has.
    Loader worker processes are the exception: they start their streams afresh, so
    augmentation done in workers draws differently for the rest of the interrupted epoch.

    Args:
        dirpath: Where the checkpoint goes; None: the run directory's ``checkpoints/``.
        filename: Without ``.ckpt``; "last" is what ``--ckpt_path last`` looks for.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last") -> None:
        super().__init__(dirpath or "checkpoints", filename)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException | KeyboardInterrupt):
            return
        trainer.save_checkpoint(self.ckpt_path)
        signal = "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl+C (SIGINT)"
        run_dir = Path(trainer.default_root_dir)
        rank_zero_info(
            f"Stopped by {signal} at epoch {trainer.current_epoch}, step {trainer.global_step}: "
            f"saved {self.ckpt_path}. Resume with: python -m {__name__.partition('.')[0]} fit "
            f"--config {run_dir / 'config.yaml'} --ckpt_path last"
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning bug #20550: once configure_optimizers reads estimated_stepping_batches
        # (OneCycle does), the train loader and its iterator are made before the checkpoint
        # is restored, and the loader position it saved is never loaded. Load it, and start
        # the iterator again from there, before the first batch is drawn.
        loop = trainer.fit_loop
        if loop.restarting and loop._combined_loader_states_to_load:
            loop._load_combined_loader_states()
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
