"""The classification system: loss, metrics and optimisation around any network."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, PositiveFloat
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
)
from torchmetrics.utilities.distributed import gather_all_tensors

from .decision import decide, fit_offsets, macro_f1
from .evaluation import (
    CalibrationBins,
    GroupConfusion,
    MacroF1,
    Top1Accuracy,
    WeightedMean,
    expected_calibration_error,
)
from .preprocessing import Standardize
from .schedulers import OneCycle, ScheduleFactory
from .strategies import holds_whole_model

# This class overrides configure_gradient_clipping for FSDP and bf16; under DeepSpeed the
# override steps aside and the engine clips by gradient_clip_val, so the warning is moot.
warnings.filterwarnings("ignore", "Since DeepSpeed handles gradient clipping internally")

NetworkFactory = Callable[[Sequence[int], int], nn.Module]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


def cross_entropy(
    logits: Tensor, target: Tensor, weight: Tensor | None, smoothing: float
) -> Tensor:
    """``F.cross_entropy(logits, target, weight, label_smoothing=smoothing)``, same value.

    With both class weights and label smoothing, torch normalises the smoothing term through
    ``masked_select``, whose output size the CPU must read from the GPU at every step; this
    normalises by the same sum, ``weight[target].sum()``, without leaving the device.
    """
    if weight is None or smoothing == 0:
        return F.cross_entropy(logits, target, weight=weight, label_smoothing=smoothing)
    log_p = F.log_softmax(logits, dim=1)
    nll = F.nll_loss(log_p, target, weight=weight)
    smooth = -(log_p * weight).sum() / weight[target].sum()
    return (1 - smoothing) * nll + smoothing / logits.shape[1] * smooth


class Classifier(L.LightningModule):
    """Trains any network that maps ``(N, *input_shape)`` inputs to ``(N, num_classes)`` logits.

    Inputs arrive raw; the first layer standardises them with statistics fitted on the
    training split, and that layer is saved with the weights, so predict and serve apply the
    same preprocessing as training.
    """

    def __init__(
        self,
        network: NetworkFactory,
        num_classes: int,
        input_shape: Sequence[int],
        lr: PositiveFloat | Literal["auto"] = 3e-3,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: ScheduleFactory | None = OneCycle,
        label_smoothing: ClosedUnitInterval = 0.0,
        channels_last: bool | Literal["auto"] = "auto",
        compile: bool | CompileMode = False,
        decision: Literal["argmax", "f1_macro"] = "argmax",
    ) -> None:
        """
        Args:
            network: Builds the network from ``(input_shape, num_classes)``.
            num_classes: Linked from the data module.
            input_shape: Shape of one input without the batch dimension; linked from the data.
            lr: Base (or peak) learning rate; "auto": ``fit`` runs Lightning's LR finder first
                and trains with its suggestion (see ``lr_finder.json`` in the run directory).
            optimizer: Built with the model's parameters and ``lr``.
            lr_scheduler: Built with the optimizer and the run's total optimizer steps;
                None keeps ``lr`` constant.
            label_smoothing: Cross-entropy label smoothing, 0 to disable.
            channels_last: Keep images and convolution weights in NHWC layout, which the GPU's
                tensor cores run fastest (mixed precision on Volta or newer); "auto": for a
                network with convolutions trained on a CUDA GPU.
            compile: Compile the forward pass and the loss with ``torch.compile`` (the first
                steps are slower); a mode name instead of true picks the mode:
                "reduce-overhead" replays CUDA graphs, for GPUs that finish a step before
                Python has launched the next.
            decision: Which class ``test``, ``predict``, ``serve`` and the export name:
                "argmax", the most probable; "f1_macro", the argmax after per-class offsets
                fitted on each validation epoch to maximise macro-F1 (saved with each
                checkpoint; the probabilities stay as they are), for a rare class that
                the argmax misses. See ``decision.py``.
        """
        super().__init__()
        # Plain numbers in the saved hyperparameters: the bounded types the command line
        # checked would make torch.load(weights_only=True) refuse the checkpoint.
        lr = lr if lr == "auto" else float(lr)
        label_smoothing = float(label_smoothing)
        self.save_hyperparameters()
        self.lr = lr
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.standardize = Standardize(input_shape)
        # Loss weight per class: all ones unless the data's imbalance rule asks for weights.
        self.register_buffer("class_weights", torch.ones(num_classes))
        # Added to log-probabilities before the argmax that names a class (see decision.py).
        self.register_buffer("decision_offsets", torch.zeros(num_classes))
        self.validation_outputs: list[tuple[Tensor, Tensor]] = []
        self.weighted_loss = True  # until a stage starts and sees whether the weights differ
        self.network = network(input_shape, num_classes)
        self.channels_last = False
        if channels_last is True:
            self.use_channels_last()
        # Raw inputs to loss as one compiled function, so preprocessing and the loss join the
        # network's graph. The module itself stays uncompiled (checkpoints keep plain names),
        # and the function unbound (a copy of the module calls it with itself).
        self.score = Classifier.logits_and_loss
        if compile:
            self.score = torch.compile(self.score, mode=None if compile is True else compile)
        # No metric may read values back from the GPU during a training step (that stalls it):
        # validate_args=False skips checks the loss makes anyway, and per-class metrics, whose
        # torch.bincount reads its input's maximum, are computed in evaluation only.
        accuracy = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        f1_macro = MacroF1(num_classes)
        metrics = MetricCollection({"acc": accuracy, "f1_macro": f1_macro})
        self.train_accuracy = Top1Accuracy()  # the same value, in fewer kernels per step
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # Mean losses over the whole split, weighted like the loss: Lightning's sync_dist
        # averages each rank's sample count as an integer, one sample off for an odd split.
        self.val_loss, self.test_loss = WeightedMean(), WeightedMean()
        self.test_confusion = MulticlassConfusionMatrix(num_classes, validate_args=False)
        self.test_calibration = CalibrationBins(n_bins=15)
        self.test_groups: GroupConfusion | None = None  # when the data names groups

    def use_channels_last(self) -> None:
        self.channels_last = True
        self.network.to(memory_format=torch.channels_last)

    def setup(self, stage: str) -> None:
        convolutional = any(isinstance(m, nn.Conv2d) for m in self.network.modules())
        on_gpu = self.trainer.strategy.root_device.type == "cuda"
        automatic = self.hparams.channels_last == "auto" and not self.channels_last
        # Not under FSDP or DeepSpeed: a fused optimizer there refuses NHWC shards.
        whole = holds_whole_model(self.trainer.strategy)
        if automatic and convolutional and on_gpu and whole:
            self.use_channels_last()
            rank_zero_info("Memory layout: channels_last (auto: convolutions on a CUDA GPU)")
        datamodule = self.trainer.datamodule
        if stage == "fit" and hasattr(datamodule, "train_statistics"):
            # Resuming restores the same buffers from the checkpoint after this.
            self.standardize.fit(*datamodule.train_statistics())
        if stage == "fit" and getattr(datamodule, "class_weights", None) is not None:
            self.class_weights.copy_(torch.as_tensor(datamodule.class_weights))
        groups = getattr(datamodule, "group_names", None) if stage == "test" else None
        if groups:  # test batches then carry each sample's group code as a third element
            self.test_groups = GroupConfusion(len(groups), self.hparams.num_classes)

    def on_fit_start(self) -> None:
        """DeepSpeed casts the network's parameters to bf16 but not its buffers, and BatchNorm
        refuses statistics of another dtype than its weights: cast them alike.

        Equal class weights (the weights are restored by now) take torch's own loss, which
        launches fewer kernels per step than the weighted one."""
        self.weighted_loss = bool((self.class_weights != 1).any())
        dtype = next(self.network.parameters()).dtype
        for module in self.network.modules():
            for name, buffer in module.named_buffers(recurse=False):
                if buffer.is_floating_point() and buffer.dtype != dtype:
                    setattr(module, name, buffer.to(dtype))

    on_validation_start = on_test_start = on_predict_start = on_fit_start

    def on_train_start(self) -> None:
        """Refuse a resumed run that would outlast its restored schedule: torch's OneCycle
        fails at its planned end, a cosine schedule would train on at its last, least rate."""
        planned = self.trainer.estimated_stepping_batches  # inf: no schedule has an end
        for config in self.trainer.lr_scheduler_configs:
            ends = getattr(config.scheduler, "total_steps", None)
            if ends is not None and ends < planned:
                raise ValueError(
                    f"{self.trainer.ckpt_path}: its {type(config.scheduler).__name__} schedule "
                    f"was planned for {ends} optimizer steps, and this run asks for {planned:.0f} "
                    "(trainer.max_epochs, max_steps or the data changed). A schedule can't be "
                    "stretched once started: resume with the run's own max_epochs, or train a "
                    "new run for longer."
                )

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        # In the network's dtype: DeepSpeed casts parameters to bf16, not these buffers.
        dtype = next(self.network.parameters()).dtype
        return self.network(self.standardize(x).to(dtype))

    def _step(
        self, batch: tuple[Tensor, Tensor], metrics: Metric | MetricCollection
    ) -> tuple[Tensor, Tensor]:
        """Loss and logits of one batch; updates ``metrics``."""
        x, y = batch[0], batch[1]
        weights = self.class_weights.float() if self.weighted_loss else None
        logits, loss = self.score(self, x, y, weights)
        metrics.update(logits, y)
        return loss, logits

    def logits_and_loss(
        self, x: Tensor, y: Tensor, weights: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The loss in float32, as autocast computes it (under DeepSpeed the model is all bf16)."""
        logits = self(x)
        return logits, cross_entropy(logits.float(), y, weights, self.hparams.label_smoothing)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self._step(batch, self.train_accuracy)
        # Each self.log call costs host time that the GPU would wait for; the logger records
        # training values every log_every_n_steps only, so they are logged only then. Not
        # prog_bar either: see callbacks.ProgressBar.
        every = self.trainer.log_every_n_steps
        if every and (self.global_step + 1) % every == 0:
            self.log("train/loss", loss)
        return loss

    def on_train_epoch_end(self) -> None:
        # Updated every step on the device, computed (and synced across DDP ranks) once here.
        # The values are equal on every rank already: sync_dist averages equals, and keeps
        # Lightning from warning that they were not synced.
        self.log("train/acc", self.train_accuracy.compute(), sync_dist=True)
        self.train_accuracy.reset()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        # Synced across DDP ranks: all must see one monitored value (checkpoint names, early stop).
        loss, logits = self._step(batch, self.val_metrics)
        self.val_loss.update(loss, weight=self.class_weights[batch[1]].sum())
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log_dict(self.val_metrics, prog_bar=True)
        if self.hparams.decision == "f1_macro":
            self.validation_outputs.append((logits.detach(), batch[1]))
        return logits  # for callbacks (callbacks.ValidationPlots)

    def on_validation_epoch_end(self) -> None:
        """Fit the decision offsets on this epoch's validation logits (every rank's), so the
        checkpoint saved after this validation holds the offsets of its own weights."""
        if not self.validation_outputs or self.trainer.sanity_checking:
            self.validation_outputs.clear()
            return
        logits, target = (torch.cat(parts) for parts in zip(*self.validation_outputs, strict=True))
        self.validation_outputs.clear()
        if self.trainer.world_size > 1:  # shards of unequal size: padded, gathered, trimmed
            logits, target = (torch.cat(gather_all_tensors(t)) for t in (logits, target))
        self.decision_offsets.copy_(fit_offsets(logits, target))
        decided = self.decision_scores(logits).argmax(dim=1)
        score = macro_f1(decided, target, self.hparams.num_classes)
        self.log("val/f1_macro_decided", score, sync_dist=True)

    def decision_scores(self, logits: Tensor) -> Tensor:
        """Log-probabilities plus the decision offsets (0 by default): their argmax is the
        class the model names."""
        return logits.float().log_softmax(dim=1) + self.decision_offsets

    def decide(self, probabilities: Tensor) -> Tensor:
        """The class named for each row of ``probabilities`` (see ``decision``)."""
        return decide(probabilities, self.decision_offsets)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints from before decision offsets existed decide by the argmax."""
        state = checkpoint.get("state_dict", {})
        state.setdefault("decision_offsets", torch.zeros_like(self.decision_offsets))

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        weights = self.class_weights.float() if self.weighted_loss else None
        logits, loss = self.score(self, batch[0], batch[1], weights)
        decided = self.decision_scores(logits)  # what test names, as predict and serve do
        self.test_metrics.update(decided, batch[1])
        self.test_loss.update(loss, weight=self.class_weights[batch[1]].sum())
        self.log("test/loss", self.test_loss)
        self.log_dict(self.test_metrics)
        self.test_confusion.update(decided, batch[1])
        self.test_calibration.update(logits, batch[1])
        if self.test_groups is not None:
            self.test_groups.update(decided, batch[1], batch[2])

    def on_test_epoch_end(self) -> None:
        # compute() syncs across DDP ranks, so every rank calls it here; reports read the result.
        self.confusion_matrix = self.test_confusion.compute()
        self.calibration_bins = self.test_calibration.compute()
        self.log("test/ece", expected_calibration_error(self.calibration_bins), sync_dist=True)
        self.test_confusion.reset()
        self.test_calibration.reset()
        if self.test_groups is not None:
            self.group_confusion = self.test_groups.compute()
            self.test_groups.reset()

    def predict_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).softmax(dim=-1)

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip by norm under FSDP, and fused optimizers too under bf16.

        Lightning refuses norm clipping under FSDP: the norm is over all shards, which only
        the wrapped root module can compute, and its precision plugin has no handle on it.
        It also refuses to clip for any optimizer that unscales gradients itself once mixed
        precision is on (``optimizer.init_args.fused: true``); only fp16's loss scaling needs
        that refusal, bf16 has no scaler.
        """
        if isinstance(self.trainer.strategy, DeepSpeedStrategy):
            return  # the DeepSpeed engine clips, by the trainer's gradient_clip_val
        by_norm = gradient_clip_val and gradient_clip_algorithm in (None, "norm")
        if by_norm and isinstance(self.trainer.strategy, FSDPStrategy):
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
            return
        if by_norm and str(self.trainer.precision).startswith("bf16"):
            # The optimizer's list, not self.parameters(): that walks every module, metrics too.
            stepped = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(stepped, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        if self.lr == "auto":
            raise ValueError(
                "lr='auto' is resolved by the `fit` subcommand, which runs the LR finder first; "
                "outside the CLI, run lightning.pytorch.tuner.Tuner.lr_find and set model.lr."
            )
        optimizer = self.optimizer(self.parameters(), lr=self.lr)
        if self.lr_scheduler is None:
            return optimizer
        steps = self.trainer.estimated_stepping_batches  # inf: max_epochs -1, no max_steps
        scheduler = self.lr_scheduler(optimizer, int(steps) if math.isfinite(steps) else None)
        if isinstance(scheduler, ReduceLROnPlateau):
            config = {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss"}
        else:
            config = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": config}
