"""What each trainer profile needs, checked before anything is built.

Lightning finds some mismatches only once the data is read and the model built, on the GPU
nodes a job waited hours for; these checks name what to change before any of that.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.strategies import (
    DDPStrategy,
    DeepSpeedStrategy,
    FSDPStrategy,
    SingleDeviceStrategy,
    Strategy,
    StrategyRegistry,
)

SHARDED = ("fsdp", "deepspeed")


def strategy_family(strategy: Any) -> str:
    """``fsdp``, ``deepspeed``, ``ddp`` or ``single`` for a strategy given as a registered
    name, a ``class_path`` spec or an object."""
    if isinstance(strategy, str):
        name = strategy
    elif isinstance(strategy, dict | Namespace) and "class_path" in strategy:
        name = strategy["class_path"].rpartition(".")[2]
    else:
        name = type(strategy).__name__
    name = name.lower()
    return next((family for family in (*SHARDED, "ddp") if family in name), "single")


def holds_whole_model(strategy: Strategy) -> bool:
    """Whether every rank holds the whole model (one device, DDP); FSDP and DeepSpeed split
    it, and save checkpoints their own way (DeepSpeed: a folder of shards)."""
    whole = isinstance(strategy, SingleDeviceStrategy | DDPStrategy)
    return whole and not isinstance(strategy, DeepSpeedStrategy)


def ready_to_restore(
    model: L.LightningModule, strategy: Strategy, checkpoint: str
) -> L.LightningModule:
    """``model`` itself, or after ``fit`` under FSDP a fresh copy loaded from ``checkpoint``.

    FSDP leaves the trained module's parameters as flattened shards (a size-0 view where a
    weight lives on another rank), and Lightning 2.6 loads a full checkpoint into them
    directly, which fails with "size mismatch" (Lightning issue #20373). A fresh module takes
    the weights, then the test stage shards it again.
    """
    if not isinstance(strategy, FSDPStrategy):
        return model
    return type(model).load_from_checkpoint(checkpoint, map_location="cpu")


def is_installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def problems(trainer: Any, gpus: int, installed: Callable[[str], bool] = is_installed) -> list[str]:
    """Why this trainer config cannot run on a machine with ``gpus`` CUDA devices; empty when
    it can. ``trainer`` is the parsed ``trainer`` section of the config."""
    strategy, accelerator = trainer.strategy, str(trainer.accelerator)
    known = StrategyRegistry.available_strategies()
    if isinstance(strategy, str) and strategy != "auto" and strategy not in known:
        return [f"Unknown strategy {strategy!r}: choose one of auto, {', '.join(sorted(known))}."]
    family, found = strategy_family(strategy), []
    if family in SHARDED and accelerator not in ("gpu", "cuda", "auto"):
        found.append(
            f"{family} shards the model over GPUs and torch has no CPU backend for it "
            f"(accelerator={accelerator!r}); for several CPU processes use "
            "--trainer configs/trainer/ddp_cpu.yaml."
        )
    elif gpus == 0 and (accelerator in ("gpu", "cuda") or family in SHARDED):
        found.append(
            "This trainer profile needs a CUDA GPU and this machine has none: use --trainer "
            "configs/trainer/cpu.yaml (or ddp_cpu.yaml to run DDP code on the CPU)."
        )
    if family == "deepspeed":
        if not installed("deepspeed"):
            found.append(
                "DeepSpeed is an optional extra and is not installed here: "
                "pip install -e '.[deepspeed]'."
            )
        if trainer.gradient_clip_algorithm == "value":
            found.append(
                "DeepSpeed clips gradients by norm only: drop --trainer.gradient_clip_algorithm "
                "value (the norm is the default)."
            )
    return found


def check(trainer: Any, gpus: int) -> None:
    """Raise one error listing every problem :func:`problems` finds."""
    if found := problems(trainer, gpus):
        raise ValueError("The trainer settings cannot run here:\n- " + "\n- ".join(found))
