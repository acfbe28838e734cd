"""A run stopped anywhere, by SIGTERM or a kill, and resumed ends with the weights of a run
never stopped: the same batches in every later epoch, the same augmentation draws with loader
workers too, and a validation a signal cut short run again."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from .conftest import NO_LOGGER, datamodule_class, default_config, run

RESUMING = ("ModelCheckpoint", "EarlyStopping", "Resumable")  # the callbacks that take part
CALLBACKS = [
    spec
    for spec in default_config()["trainer"]["callbacks"]
    if spec["class_path"].rsplit(".", 1)[-1] in RESUMING
]
# Three epochs of three batches: a stop mid-epoch 1 is followed by a whole epoch.
SHORT = [
    *NO_LOGGER, "--trainer.max_epochs=3", "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=1", "--data.profile=false",
    f"--trainer.callbacks={json.dumps(CALLBACKS)}",
]  # fmt: skip
PHASES = ("train", "validation", "epoch_end", "checkpoint")


class Killed(BaseException):
    """What SIGKILL does to a process, here: it stops, and nothing saves a checkpoint."""


class Interrupt(L.Callback):
    """Once (``marker`` says it happened): SIGTERM or a kill in ``phase`` of ``epoch``, at
    ``batch`` for the training and validation phases."""

    def __init__(self, phase: str, epoch: int, batch: int, kill: bool, marker: str) -> None:
        self.phase, self.epoch, self.batch, self.kill = phase, epoch, batch, kill
        self.marker = Path(marker)

    def strike(self, trainer: L.Trainer, phase: str, batch: int = 0) -> None:
        wanted = (self.phase, self.epoch, self.batch if phase in ("train", "validation") else 0)
        if self.marker.exists() or (phase, trainer.current_epoch, batch) != wanted:
            return
        self.marker.touch()
        if self.kill:
            raise Killed(phase)
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "no handler: it'd kill"
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler: stop at the next check

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.strike(trainer, "train", batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_) -> None:
        if not trainer.sanity_checking:
            self.strike(trainer, "validation", batch_idx)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.strike(trainer, "epoch_end")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if self.kill and not trainer.interrupted:  # a kill while ModelCheckpoint writes
            self.strike(trainer, "checkpoint")


def final_weights(root: Path, name: str) -> dict[str, torch.Tensor]:
    last = root / name / "checkpoints" / "last.ckpt"
    return torch.load(last, map_location="cpu", weights_only=True)["state_dict"]


def stop_and_resume(root: Path, cut: tuple, *args: str) -> dict[str, torch.Tensor]:
    """Fit until ``cut`` = (phase, epoch, batch, kill) stops it, resume, return the weights."""
    phase, epoch, batch, kill = cut
    name = f"{phase}-{epoch}-{batch}-{'kill' if kill else 'term'}"
    marker = str(root / f"{name}.done")
    spec = {"phase": phase, "epoch": epoch, "batch": batch, "kill": kill, "marker": marker}
    callback = json.dumps({"class_path": f"{__name__}.Interrupt", "init_args": spec})
    with pytest.raises(Killed if kill else SIGTERMException):
        run("fit", root, *SHORT, *args, f"--run.name={name}", f"--trainer.callbacks+={callback}")
    checkpoints = root / name / "checkpoints"
    if phase == "checkpoint":  # a SIGKILL mid-write leaves its partial file (no Python runs)
        checkpoints.mkdir(exist_ok=True)  # the run's first save: nothing was written before
        (checkpoints / "last.ckpt.partial").write_bytes(b"PK\x03\x04 half a checkpoint")
    run("fit", root, *SHORT, *args, f"--run.name={name}", "--ckpt_path=last")
    assert not list(checkpoints.glob("*.partial"))
    return final_weights(root, name)


def assert_same(weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(weights[name], tensor), f"{name}: {(weights[name] - tensor).abs().max()}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    root = tmp_path_factory.mktemp("whole")
    run("fit", root, *SHORT, "--run.name=whole")
    return final_weights(root, "whole")


@pytest.mark.parametrize(
    "cut",
    [
        ("train", 1, 1, False),  # SIGTERM mid-epoch: epoch 2 must be drawn as it would be
        ("validation", 0, 0, False),  # SIGTERM in the first validation (Lightning skipped it)
        ("train", 2, 0, True),  # killed: resumed from the end of epoch 1 (ModelCheckpoint's)
    ],
    ids=lambda cut: "-".join(map(str, cut)),
)
def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path, uninterrupted, cut) -> None:
    assert_same(stop_and_resume(tmp_path, cut), uninterrupted)


def test_resumed_with_loader_workers_ends_with_the_same_weights(tmp_path: Path) -> None:
    """Augmentation drawn in worker processes follows the sample, not the worker's stream."""
    workers = ["--data.num_workers=2", "--data.persistent_workers=false"]
    run("fit", tmp_path, *SHORT, *workers, "--run.name=whole")
    weights = stop_and_resume(tmp_path, ("train", 1, 1, False), *workers)
    assert_same(weights, final_weights(tmp_path, "whole"))


def test_stopped_at_random_points_and_phases_resumes_exactly(tmp_path, uninterrupted) -> None:
    """Chaos: a few random (phase, epoch, batch, SIGTERM or kill); CHAOS_SEED repeats a draw."""
    seed = int(os.environ.get("CHAOS_SEED", random.SystemRandom().randrange(2**32)))
    draw = random.Random(seed)
    cuts: list[tuple] = []
    while len(cuts) < 2:  # two different cuts: each run has its own name
        phase = draw.choice(PHASES)
        kill = phase == "checkpoint" or draw.random() < 0.5  # a checkpoint is cut by a kill
        batch = draw.randrange(3 if phase == "train" else 2) if phase != "epoch_end" else 0
        cut = (phase, draw.randrange(3), batch if phase != "checkpoint" else 0, kill)
        cuts += [cut] if cut not in cuts else []
    print(f"CHAOS_SEED={seed}: {cuts}")
    for cut in cuts:
        assert_same(stop_and_resume(tmp_path, cut), uninterrupted)


def served(loader, epochs: range, batches: int | None = None) -> list[list[torch.Tensor]]:
    """Each batch of ``epochs``, told its epoch as Lightning tells it; the first ``batches``
    of each (islice stops before drawing one more, as a checkpoint between steps does)."""
    out = []
    for epoch in epochs:
        sampler = getattr(loader.batch_sampler, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        out += list(itertools.islice(loader, batches))
    return out


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("balanced", [False, True], ids=["shuffled", "balanced"])
def test_a_loader_resumed_mid_epoch_serves_the_same_batches(workers: int, balanced: bool) -> None:
    def loader():
        datamodule = datamodule_class()(seed=7, batch_size=16, num_workers=workers, profile=False)
        if balanced:  # what `class_imbalance: sampler` sets for imbalanced training data
            datamodule.state["balanced_sampler"] = True
        return datamodule.train_dataloader()

    expected = served(loader(), range(3))
    first = loader()
    before = served(first, range(1)) + served(first, range(1, 2), batches=2)
    state = first.state_dict()  # a checkpoint mid-epoch 1
    second = loader()
    second.load_state_dict(state)
    after = served(second, range(1, 3))
    assert len(before + after) == len(expected)
    for number, (batch, wanted) in enumerate(zip(before + after, expected, strict=True)):
        assert all(torch.equal(a, b) for a, b in zip(batch, wanted, strict=True)), number
