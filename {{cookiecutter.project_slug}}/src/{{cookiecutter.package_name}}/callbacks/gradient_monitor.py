"""Gradient norms per layer, exploding/vanishing alerts, histograms, and a stop on the first
non-finite gradient, without host syncs between checks."""

from __future__ import annotations

from math import isfinite

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.optim import Optimizer

from .gradient_trends import GradientTrends


class GradientMonitor(L.Callback):
    """Logs ``grad_norm/global`` and ``grad_norm/<parameter>`` and stops on NaN/Inf gradients.

    Lightning's ``grad_norm`` utility turns every norm into a Python float, which makes the
    CPU wait for the GPU at every step; this callback keeps the steady state free of such
    syncs. Every optimizer step it launches one fused norm over all gradients and copies the
    norms into a row of a table on the device (few kernels: a step is often bound by how
    fast Python launches them). It reads the table (one copy) and logs the norms only every
    ``every_n_steps`` steps, before each validation, before each checkpoint and at the end of
    training, so a run stops within ``every_n_steps`` steps of the fault, before any
    checkpoint of the broken weights is written, naming the step and the layer.
    The norms go to the loggers directly, in one copy from the device: through
    ``LightningModule.log`` each of the ~60 values would cost a millisecond of host time.

    At each check the norms also go to :class:`GradientTrends`, which warns once per layer
    about exploding or vanishing gradients relative to the run's first step. Weight and
    gradient histograms go to TensorBoard or W&B every ``histogram_every_n_steps`` (a CSV
    file can't show them).

    Norms are taken after gradient unscaling and before clipping. Under fp16 mixed precision
    the loss scaler skips steps with Inf gradients by design, so the stop is off there.

    With several processes every check agrees across ranks: under FSDP each rank holds a
    shard of each gradient, so the shards' norms are combined into the whole gradient's; and
    a non-finite norm on any rank counts on all, so every rank stops at the same check with
    the same message (a rank stopping alone leaves the others waiting in a collective).
    Under DeepSpeed the gradients live in ZeRO's partitioned buffers, not in ``p.grad``:
    the monitor says so at the start and stays off (DeepSpeed clips by its own
    ``gradient_clipping``).
    """

    UNLOGGED_ROWS = 50  # steps between checks when nothing sets an interval (log_every_n_steps 0)

    def __init__(
        self,
        norm_type: float = 2.0,
        per_layer: bool = True,
        stop_on_nonfinite: bool = True,
        every_n_steps: int | None = None,
        explode_factor: float = 100.0,
        vanish_factor: float = 1e-4,
        depth_ratio: float = 1e-5,
        patience: int = 3,
        histogram_every_n_steps: int | None = 100,
    ) -> None:
        """
        Args:
            norm_type: Order of the norm (2 = Euclidean, ``inf`` = largest entry).
            per_layer: Log one norm per parameter tensor as well as the global one.
            stop_on_nonfinite: Raise on a NaN/Inf gradient, naming the parameter and step.
            every_n_steps: Steps between logging and checking; None: the trainer's
                ``log_every_n_steps``.
            explode_factor: Exploding: a layer's norm above this multiple of its first-step norm.
            vanish_factor: Vanishing: a layer's norm below this share of its first-step norm ...
            depth_ratio: ... or below this share of the largest layer's norm.
            patience: Checks in a row a condition must hold before the warning.
            histogram_every_n_steps: Steps between weight/gradient histograms for TensorBoard
                or W&B; None: none.
        """
        self.norm_type = norm_type
        self.per_layer = per_layer
        self.stop_on_nonfinite = stop_on_nonfinite
        self.every_n_steps = every_n_steps
        self.trend_options = (explode_factor, vanish_factor, depth_ratio, patience)
        self.trends = GradientTrends(*self.trend_options)  # renewed at each train start
        self.histogram_every_n_steps = histogram_every_n_steps
        self.alerts: list[str] = []
        self._parameters: list[tuple[str, Tensor]] = []
        self._names: list[str] = []
        self._history: Tensor | None = None  # (steps, layers) norms not read yet ...
        self._filled = 0  # ... in its first rows, the first of them from step _first_step
        self._first_step = 0
        self._sharded = False  # each rank holds a shard of each gradient
        self._off = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._history, self._filled, self._first_step = None, 0, 0
        self.trends = GradientTrends(*self.trend_options)  # each fit judged by its own start
        self._off = isinstance(trainer.strategy, DeepSpeedStrategy)
        if self._off:
            rank_zero_warn(
                "GradientMonitor is off under DeepSpeed: ZeRO keeps the gradients in its own "
                "partitioned buffers, not in each parameter's .grad, so there are no norms to "
                "log and no non-finite gradient to stop on. Use the ddp or fsdp trainer profile "
                "to watch them."
            )
        self._sharded = isinstance(trainer.strategy, FSDPStrategy | ModelParallelStrategy)
        # Every trainable parameter, in the same order on every rank (under sharding a rank
        # may hold no part of one); walking modules costs a ms, so once a fit.
        trainable = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]
        self._parameters = [(n.replace("_fsdp_wrapped_module.", ""), p) for n, p in trainable]

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer
    ) -> None:
        if self._off:
            return
        if self._sharded:  # a missing shard reads as a zero, so every rank has every column
            named = [(n, p.new_zeros(1) if p.grad is None else p.grad) for n, p in self._parameters]
        else:
            named = [(n, p.grad) for n, p in self._parameters if p.grad is not None]
        if not named:  # no parameter has a gradient (e.g. everything frozen)
            return
        names = [name for name, _ in named]
        if names != self._names:  # another set of layers: judge the old rows by the old names
            self.check(trainer)
            self._names, self._history = names, None
        every = self.every_n_steps or trainer.log_every_n_steps
        self._record([g for _, g in named], trainer.global_step, every or self.UNLOGGED_ROWS)
        due = bool(every) and (trainer.global_step + 1) % every == 0
        full = self._history is not None and self._filled == len(self._history)
        if due or full or self.trends.baseline_step is None:
            values = self._read(trainer)[-1]  # this step's norms: the last row
            if due:
                self._log(trainer, values)
            for alert in self.trends.update(trainer.global_step, self._names, values):
                rank_zero_warn(alert)
                self.alerts.append(alert)
        histograms = self.histogram_every_n_steps
        if histograms and (trainer.global_step + 1) % histograms == 0:
            self._histograms(trainer)

    def _record(self, gradients: list[Tensor], step: int, rows: int) -> None:
        """This step's norms, as the next row of a table on the device; no sync."""
        if self._history is None:
            shape = (rows, len(gradients))
            self._history = torch.empty(shape, device=gradients[0].device, dtype=torch.float32)
        if self._filled == 0:
            self._first_step = step
        norms = torch._foreach_norm(gradients, self.norm_type)
        torch.stack(norms, out=self._history[self._filled])
        self._filled += 1

    def _read(self, trainer: L.Trainer) -> list[list[float]]:
        """The rows recorded since the last read, in one copy from the device; raises on the
        first non-finite norm (unless the stop is off) and empties the table."""
        if self._history is None or not self._filled:
            return []
        rows = self._agreed(trainer, self._history[: self._filled]).tolist()
        self._filled = 0
        stop = self.stop_on_nonfinite and trainer.precision != "16-mixed"
        for offset, row in enumerate(rows):
            bad = [name for name, norm in zip(self._names, row, strict=True) if not isfinite(norm)]
            if bad and stop:
                raise FloatingPointError(
                    f"Non-finite gradient in {', '.join(repr(n) for n in bad[:5])} at step "
                    f"{self._first_step + offset} (noticed at step {trainer.global_step}). "
                    "Lower the learning rate, set trainer.gradient_clip_val, or look for "
                    "NaN/Inf in the inputs of that batch."
                )
        return rows

    def _agreed(self, trainer: L.Trainer, norms: Tensor) -> Tensor:
        """The norms every rank reads alike: the whole gradients' from the shards' (the sum of
        the shards' p-th powers, or their largest for the inf norm), and non-finite wherever
        any rank's is. Collective: every rank reads at the same checks. An interrupted run
        (SIGTERM, Ctrl+C) checks what its own rank holds: the others may not be here."""
        if trainer.world_size == 1 or trainer.interrupted or not dist.is_initialized():
            return norms
        broken = (~torch.isfinite(norms)).to(torch.float32)
        dist.all_reduce(broken, op=dist.ReduceOp.MAX)
        if self._sharded:
            p = self.norm_type
            if p == float("inf"):
                norms = norms.clone()
                dist.all_reduce(norms, op=dist.ReduceOp.MAX)
            else:
                powers = norms.double().nan_to_num(posinf=0.0) ** p
                dist.all_reduce(powers, op=dist.ReduceOp.SUM)
                norms = (powers ** (1 / p)).to(norms.dtype)
        return torch.where(broken > 0, float("nan"), norms)

    def _log(self, trainer: L.Trainer, norms: list[float]) -> None:
        total = float(torch.linalg.vector_norm(torch.tensor(norms), self.norm_type))
        logged = {"grad_norm/global": total}
        if self.per_layer:
            logged |= {f"grad_norm/{n}": v for n, v in zip(self._names, norms, strict=True)}
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=trainer.global_step)

    def _histograms(self, trainer: L.Trainer) -> None:
        """Weights and gradients of every layer, for the loggers that can show a histogram."""
        shown = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger | WandbLogger)]
        if not shown:
            return
        values = {}
        for name, parameter in self._parameters:
            values[f"weights/{name}"] = parameter.detach().float().cpu()
            if parameter.grad is not None:
                values[f"gradients/{name}"] = parameter.grad.detach().float().cpu()
        for logger in shown:
            if isinstance(logger, TensorBoardLogger):
                for tag, tensor in values.items():
                    logger.experiment.add_histogram(tag, tensor, trainer.global_step)
            else:
                import wandb  # only with W&B as the logger

                histograms = {tag: wandb.Histogram(t.numpy()) for tag, t in values.items()}
                logger.log_metrics(histograms, step=trainer.global_step)

    def check(self, trainer: L.Trainer) -> None:
        """Raise if a gradient went non-finite since the last check (reads the device)."""
        self._read(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict
    ) -> None:
        self.check(trainer)  # raising here keeps broken weights out of every checkpoint file

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)
