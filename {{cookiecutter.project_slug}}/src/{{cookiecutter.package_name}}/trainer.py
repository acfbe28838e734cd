"""Lightning's Trainer plus this project's own subcommands.

LightningCLI runs Trainer methods as subcommands. A method added here and listed in
``cli.ProjectCLI.subcommands`` becomes a subcommand with the same config files, ``--help``
and run directory as ``fit``; its typed parameters become its options.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.trainer.connectors.checkpoint_connector import _CheckpointConnector
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.tuner import Tuner

from . import benchmark as bench
from . import checkpoints, lr_rules
from . import export as exporter
from .callbacks import GradientMonitor
from .data.base import CheckedDataModule
from .data.findings import raise_on_failures
from .data.loading import available_cpus
from .quiet import quiet_wandb
from .strategies import holds_whole_model


class FreshFitConnector(_CheckpointConnector):
    """A fit without ``ckpt_path`` starts afresh.

    Lightning reads ``fit(ckpt_path=None)`` beside an ``OnExceptionCheckpoint`` (``Resumable``
    is one) as ``ckpt_path="last"``, and warns twice on every fresh fit and ``tune`` that no
    model was given and no last checkpoint exists. Resuming is asked for: ``--ckpt_path last``
    (a requeued SLURM job still resumes by itself, as Lightning has it).
    """

    def _parse_ckpt_path(
        self, state_fn: TrainerFn, ckpt_path: object, model_provided: bool, model_connected: bool
    ) -> object:
        requeued = SLURMEnvironment.detect() and self._hpc_resume_path is not None
        if state_fn == TrainerFn.FITTING and ckpt_path is None and not requeued:
            return None
        return super()._parse_ckpt_path(state_fn, ckpt_path, model_provided, model_connected)


class Trainer(L.Trainer):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # the CLI reads the options from L.Trainer's
        self._checkpoint_connector = FreshFitConnector(self)
        quiet_wandb(self.loggers)

    def fit(
        self,
        model: L.LightningModule,
        train_dataloaders: object = None,
        val_dataloaders: object = None,
        datamodule: L.LightningDataModule | None = None,
        ckpt_path: str | Path | None = None,
        weights_only: bool | None = None,
    ) -> None:
        """Train, or resume training from a checkpoint.

        Unfinished checkpoint writes of the run are removed first, and a damaged checkpoint
        is never resumed from (see ``checkpoints.py``).

        Args:
            ckpt_path: The checkpoint to resume from: a file, or "last" (the newest intact
                one of the run's last checkpoints), "hpc" or "registry" as in Lightning.
            weights_only: Load the checkpoint with ``torch.load(weights_only=True)``.
        """
        if self.is_global_zero:
            checkpoints.sweep_partial_writes(Path(self.default_root_dir))
        if ckpt_path is not None:
            ckpt_path = checkpoints.resume_from(self, ckpt_path)
        super().fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path, weights_only)

    def save_checkpoint(
        self, filepath: str | Path, weights_only: bool = False, storage_options: object = None
    ) -> None:
        """Write to a temporary file, then rename it: a crash or a kill in the middle of a
        save leaves the previous checkpoint of that name whole.

        Lightning writes checkpoints in place; sharded (FSDP, DeepSpeed) and remote
        checkpoints are left to it.
        """
        if not holds_whole_model(self.strategy) or "://" in str(filepath):
            super().save_checkpoint(filepath, weights_only, storage_options)
            return
        partial = Path(f"{filepath}{checkpoints.PARTIAL}")
        try:
            super().save_checkpoint(partial, weights_only, storage_options)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if self.is_global_zero:
            partial.replace(filepath)
        self.strategy.barrier("Trainer.save_checkpoint")

    def tune(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule | None = None,
        min_lr: float = 1e-6,
        max_lr: float = 1.0,
        num_training: int = 100,
        rule: lr_rules.Rule = "valley",
    ) -> float | None:
        """Find a learning rate with Lightning's LR finder; save its plot and its figures
        (``lr_finder.json``, every rule's suggestion) in the run directory. ``fit --model.lr
        auto`` runs it first.

        Args:
            min_lr: Smallest learning rate tried.
            max_lr: Largest learning rate tried.
            num_training: Number of learning rates tried, one batch each.
            rule: How the rate is read off the curve (``lr_rules``): the middle of the
                longest fall (``valley``), the steepest fall per decade (``steepest``) or a
                tenth of the rate at the lowest loss (``minimum_over_10``).
        """
        if getattr(model, "lr", None) == "auto":
            model.lr = min_lr  # a number to build the optimizer; the finder sets every rate
        max_epochs = self.fit_loop.max_epochs
        # Every rate gets its batch, however few batches an epoch or max_epochs hold.
        self.fit_loop.max_epochs = max(max_epochs, num_training)
        try:
            finder = Tuner(self).lr_find(
                model, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr,
                num_training=num_training, update_attr=False,
            )  # fmt: skip
        finally:
            self.fit_loop.max_epochs = max_epochs
        if finder is None:
            return None
        tried = {"lr": finder.results["lr"], "loss": finder.results["loss"]}
        rules = lr_rules.suggestions(tried["lr"], tried["loss"]) | {
            "lightning": finder.suggestion()
        }
        suggestion = rules[rule]
        if suggestion is not None:
            model.lr = suggestion
        if self.is_global_zero:
            self.save_lr_finder(finder, rules, rule, {"min_lr": min_lr, "max_lr": max_lr, **tried})
        return suggestion

    def save_lr_finder(self, finder, rules: dict, rule: str, figures: dict) -> None:
        """``plots/lr_finder.png`` with each rule's rate marked, and ``lr_finder.json``."""
        run_dir = Path(self.default_root_dir)
        plot = run_dir / "plots" / "lr_finder.png"
        plot.parent.mkdir(parents=True, exist_ok=True)
        figure = finder.plot(suggest=False)
        for name, lr in rules.items():
            if lr is not None:
                width, style = (2, "-") if name == rule else (1, ":")
                figure.axes[0].axvline(lr, lw=width, ls=style, color="tab:red", label=name)
        figure.axes[0].legend(fontsize=7)
        figure.savefig(plot)
        plt.close(figure)
        suggestion = rules[rule]
        report = {"suggestion": suggestion, "rule": rule, "rules": rules, **figures}
        (run_dir / "lr_finder.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"LR finder plot: {plot}")
        print(f"Suggested learning rate ({rule}): {suggestion} (use it: --model.lr {suggestion})")

    def profile(self, model: L.LightningModule, datamodule: CheckedDataModule) -> None:
        """Check the data without training: ``profile.json``, pictures, split manifest.

        Exits non-zero when ``fit`` would refuse the data, so it can gate a pipeline.
        """
        datamodule.write_reports(Path(self.default_root_dir), self.loggers)
        raise_on_failures(datamodule.prepared.findings, type(datamodule))
{%- if cookiecutter.task == "image_classification" %}

    def shard(
        self,
        model: L.LightningModule,
        datamodule: CheckedDataModule,
        output_dir: str,
        chunk_bytes: str = "64MB",
    ) -> dict:
        """Write the checked, split data as LitData shards for ``StreamingImageDataModule``:
        ``<output_dir>/{train,val,test}`` and ``meta.json``; the profile and split manifest go
        to the run directory. Needs ``pip install -e '.[streaming]'``.

        Args:
            output_dir: A new folder, or object storage such as ``s3://bucket/prefix``.
            chunk_bytes: Largest chunk file, read whole by a worker; smaller splits get
                smaller chunks, 16 at least, so that each epoch can shuffle their order.
        """
        from .data.shards import write_shards  # which imports LitData when it writes

        datamodule.write_reports(Path(self.default_root_dir), self.loggers)
        return write_shards(datamodule, output_dir, chunk_bytes)
{%- endif %}

    def serve(
        self,
        model: L.LightningModule,
        datamodule: CheckedDataModule,
        ckpt_path: str | None = None,
        weights_only: bool | None = None,
        host: str = "127.0.0.1",
        port: int = 8000,
        max_body_bytes: int = 16 * 2**20,
        drift_window: int = 1000,
        drift_threshold: float = 0.2,
        drift_min_samples: int = 100,
        max_decodes: int = 2,
    ) -> None:
        """Serve a checkpoint over HTTP: ``POST /predict``, ``GET /health``, ``GET /drift``.

        Inputs are prepared by the code ``predict`` runs, with the data state saved in the
        checkpoint; recent inputs are compared with the training profile saved there too
        (see ``serve.py`` and ``data/drift.py``). Needs the extra: ``pip install -e ".[serve]"``.

        Args:
            ckpt_path: The checkpoint to serve: its weights and its fitted data state.
            weights_only: Load the checkpoint with ``torch.load(weights_only=True)``; None:
                in full, as ``fit`` saved it (also keeps a run's saved config valid here).
            host: Address to listen on; 0.0.0.0 for every interface.
            port: TCP port; 0 takes a free one, which the log names.
            max_body_bytes: Largest request body; a larger one gets 413 before it is read.
            drift_window: How many recent inputs ``/drift`` compares with the training data;
                0: no tracking.
            drift_threshold: PSI, beyond its sampling noise, at which a feature counts as
                drifted; 0.2 is the usual "major shift" (see ``data/drift.py``).
            drift_min_samples: Inputs needed in the window before drift is judged.
            max_decodes: Requests whose inputs are decoded at once; the rest wait. An image
                takes up to ``data.max_pixels`` x 4 bytes while it decodes.
        """
        load_weights(model, "serve", ckpt_path, weights_only)
        from . import serve  # FastAPI and uvicorn: imported only by this subcommand

        app = serve.create_app(
            model, datamodule, self.strategy.root_device, self.precision_plugin.forward_context,
            max_body_bytes, drift_window, drift_threshold, drift_min_samples, max_decodes,
        )  # fmt: skip
        serve.run(app, host, port)

    def benchmark(
        self,
        model: L.LightningModule,
        datamodule: CheckedDataModule,
        steps: int = 20,
        warmup: int = 5,
        windows: int = 3,
    ) -> dict:
        """Is the device starving? Loader, model step and full training step side by side.

        Prints the three throughputs, which one bounds training and what to change; saves
        them as ``benchmark.json`` in the run directory. Checkpointing and early stopping act
        once an epoch, not per step, so the timed ``fit`` leaves them out.

        Args:
            steps: Batches per timing window.
            warmup: Batches before timing starts (workers, allocator, compilation).
            windows: Timing windows of the loader and the model step; the median counts.
        """
        device = self.strategy.root_device
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else lambda: None
        datamodule.trainer = self  # the loader settings follow this machine and trainer
        loader = datamodule.train_dataloader()  # one loader: its workers persist, as in fit
        batches = bench.endless(lambda: iter(loader))
        for _ in range(warmup):
            next(batches)

        def batch() -> tuple:  # as the model takes it: on the device, finished there
            return datamodule.training_batch(move_data_to_device(next(batches), device))

        loader_rate = bench.timed(lambda: len(batch()[1]), sync, steps, windows)
        model.to(device).train()
        step = bench.model_step(model, batch(), self)
        for _ in range(warmup):
            step()
        model_rate = bench.timed(step, sync, steps, windows)

        timer = bench.StepTimer(warmup, sync)
        # The timed fit keeps what acts on every step (the gradient monitor) and nothing that
        # reports on a run: no checkpoints, curves, plots, energy estimate, model table or
        # logger run. A benchmark prints its figures and advice.
        self.callbacks = [c for c in self.callbacks if isinstance(c, GradientMonitor)] + [timer]
        self.loggers = []
        self.fit_loop.epoch_loop.max_steps = warmup + steps * windows
        self.fit_loop.max_epochs = self.max_steps  # OneCycle's length follows max_steps
        self.limit_val_batches = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.fit(model, datamodule=datamodule)

        settings = datamodule.loader_settings
        figures = bench.Figures(
            str(device), str(self.precision), settings.batch_size, settings.num_workers,
            loader_rate, model_rate, timer.rate,
            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        )  # fmt: skip
        compiled = getattr(model, "hparams", {}).get("compile", False)
        channels_last = getattr(model, "channels_last", False)
        speedups = datamodule.device_speedups
        bench.diagnose(figures, available_cpus(), channels_last, compiled, speedups)
        if self.is_global_zero:
            path = Path(self.default_root_dir) / "benchmark.json"
            path.write_text(json.dumps(figures.as_dict(), indent=2) + "\n")
            print(figures.table())
            print(f"Saved: {path}")
        return figures.as_dict()

    def export(
        self,
        model: L.LightningModule,
        datamodule: CheckedDataModule,
        ckpt_path: str | None = None,
        quantize: bool = False,
        samples: int = 256,
        atol: float = exporter.ATOL,
        weights_only: bool | None = None,
    ) -> dict:
        """Export a checkpoint for serving: ``export/model.onnx`` (for onnxruntime) and
        ``export/model.pt2`` (``torch.export``). Both take raw inputs (a table's columns, an
        image's decoded pixels at any size) with what ``predict`` does to them inside, any
        batch size, and ``export/inputs.json`` describes their inputs and classes.

        Each is checked against ``predict`` on raw validation inputs (with missing values
        and unseen categories, or images at other sizes, made of them) and the figures saved
        in ``export/parity.json``; a disagreement exits non-zero and keeps the files.

        Args:
            ckpt_path: The checkpoint to export, e.g. ``runs/<run>/checkpoints/last.ckpt``;
                ``export/`` is written into its run directory.
            quantize: Also write ``model.int8.onnx`` (onnxruntime's dynamic int8) and report
                its validation accuracy and file size against the float model.
            samples: How many validation samples the files are checked on.
            atol: Largest difference of any class probability between an export and predict.
            weights_only: Load the checkpoint with ``torch.load(weights_only=True)``; None:
                in full, as ``fit`` saved it (also keeps a run's saved config valid here).
        """
        exporter.require_packages()
        checkpoint = load_weights(model, "export", ckpt_path, weights_only)
        datamodule.trainer = self
        validation = datamodule.validation_inputs(samples)  # on the checkpoint's split only
        if (key := type(datamodule).__qualname__) in checkpoint:
            # Refuses data that changed since training (other classes or input shape).
            datamodule.load_state_dict(checkpoint[key])
        state = datamodule.state
        out_dir = Path(self.default_root_dir) / "export"
        return exporter.export(
            model, state, datamodule.raw_inputs(), validation, datamodule.convert_inputs,
            out_dir, ckpt_path, quantize, atol,
        )  # fmt: skip


def load_weights(
    model: L.LightningModule, subcommand: str, ckpt_path: str | None, weights_only: bool | None
) -> dict:
    """Put a checkpoint's weights into ``model`` (strictly); returns the checkpoint."""
    if ckpt_path is not None and Path(ckpt_path).is_dir():
        raise ValueError(
            f"{ckpt_path} is a DeepSpeed checkpoint (a folder of shards): join it into one "
            "file first with lightning.pytorch.utilities.deepspeed."
            f"convert_zero_checkpoint_to_fp32_state_dict({str(ckpt_path)!r}, 'model.ckpt')."
        )
    if ckpt_path is None or not Path(ckpt_path).is_file():
        raise ValueError(
            f"{subcommand} needs --ckpt_path, a checkpoint file (got {ckpt_path}): e.g. "
            "--ckpt_path runs/<run>/checkpoints/last.ckpt with --config runs/<run>/config.yaml"
        )
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=bool(weights_only))
    model.load_state_dict(checkpoint["state_dict"])
    return checkpoint
