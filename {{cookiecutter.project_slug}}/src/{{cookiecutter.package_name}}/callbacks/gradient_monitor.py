"""Gradient norms per layer, and a stop on the first non-finite gradient."""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.utilities import grad_norm
from torch.optim import Optimizer


class GradientMonitor(L.Callback):
    """Logs ``grad_norm/global`` and ``grad_norm/<parameter>`` and stops on NaN/Inf gradients.

    Lightning computes norms (``lightning.pytorch.utilities.grad_norm``) but neither logs
    them by layer on its own nor says which layer went non-finite; this callback does both.
    Norms are taken after gradient unscaling and before clipping, every optimizer step, so
    the stop fires on the step that broke. Under fp16 mixed precision the loss scaler skips
    steps with Inf gradients by design, so the stop is off there.
    """

    def __init__(
        self, norm_type: float = 2.0, per_layer: bool = True, stop_on_nonfinite: bool = True
    ) -> None:
        """
        Args:
            norm_type: Order of the norm (2 = Euclidean, ``inf`` = largest entry).
            per_layer: Log one norm per parameter tensor as well as the global one.
            stop_on_nonfinite: Raise on the first NaN/Inf gradient, naming the parameter.
        """
        self.norm_type = norm_type
        self.per_layer = per_layer
        self.stop_on_nonfinite = stop_on_nonfinite

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer
    ) -> None:
        norms = grad_norm(pl_module, self.norm_type)
        if not norms:  # no parameter has a gradient (e.g. everything frozen)
            return
        prefix = f"grad_{float(self.norm_type)}_norm"
        total = norms.pop(f"{prefix}_total")
        scaler_skips_inf = trainer.precision == "16-mixed"
        if self.stop_on_nonfinite and not scaler_skips_inf and not math.isfinite(total):
            bad = next(
                (name for name, value in norms.items() if not math.isfinite(value)), "unknown"
            ).removeprefix(f"{prefix}/")
            raise FloatingPointError(
                f"Non-finite gradient in '{bad}' at step {trainer.global_step} "
                f"(global norm {total}). Lower the learning rate, set trainer.gradient_clip_val, "
                "or look for NaN/Inf in the inputs of this batch."
            )
        logged = {"grad_norm/global": total}
        if self.per_layer:
            logged |= {f"grad_norm/{k.removeprefix(prefix + '/')}": v for k, v in norms.items()}
        pl_module.log_dict(logged, on_step=True, on_epoch=False)
