"""A callback for the DDP tests: what each rank saw and holds, one JSON line per event."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


def sample_hashes(inputs: torch.Tensor) -> list[str]:
    """One hash per sample, so samples can be matched across processes without ids."""
    rows = inputs.detach().cpu().contiguous()
    return [hashlib.sha1(row.numpy().tobytes()).hexdigest()[:16] for row in rows]


def weights_hash(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Probe(Callback):
    """Writes ``<out>/rank<N>.jsonl``: samples seen per epoch, validation metrics, steps and a
    hash of the weights when training ends."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.seen: dict[str, list[str]] = {"train": [], "val": []}

    def write(self, trainer: L.Trainer, **record: object) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        record |= {"rank": trainer.global_rank, "fn": trainer.state.fn.value}
        with (self.out / f"rank{trainer.global_rank}.jsonl").open("a") as file:
            file.write(json.dumps(record) + "\n")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, event="train_start", step=trainer.global_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.seen["train"] += sample_hashes(batch[0])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.seen["val"] += sample_hashes(batch[0])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.write(trainer, event="validation", metrics=metrics, samples=self.seen["val"])
        self.seen["val"] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, event="train_epoch", samples=self.seen["train"])
        self.seen["train"] = []

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        weights = weights_hash(pl_module)
        self.write(trainer, event="train_end", step=trainer.global_step, weights=weights)


class PlantNaN(Callback):
    """A test hook, not a shipped switch: one rank's gradient of one layer turns NaN at one
    step, after DDP has averaged the gradients (so the other ranks' stay finite)."""

    def __init__(self, rank: int = 1, step: int = 3) -> None:
        self.rank, self.step = rank, step

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            name, parameter = next(pl_module.named_parameters())
            parameter.grad.fill_(float("nan"))
            print(f"planted NaN in {name!r} on rank {self.rank} at step {self.step}", flush=True)
