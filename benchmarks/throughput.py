"""Training throughput of a generated project on one GPU, against a hand-written loop and the
model alone, side by side in one process (see README.md beside this file).

    A   the project's ``fit`` through its own CLI: shipped config and callbacks, CSV logger,
        progress bar, best loader/augmentation switches (the training split resident on the
        GPU, on-device crop+flip, channels_last, fused AdamW, cuDNN autotuning)
    A_default  the same without any switch: the shipped config and the ``gpu`` profile, as a
        user gets them (``auto`` chooses the split's place, the augmentation's, the layout)
    B   the fastest plain PyTorch loop for the same model, data, augmentation and precision:
        data resident on the GPU, no framework
    C   the model alone stepping on one batch already on the GPU (channels_last, bf16)

Variants: ``B-<part>`` is B without one part of its work beyond C's (where B's time goes);
``A_compile`` / ``A_compile_ro`` compile the project's forward pass and loss, ``B_compile_ro``
its network (default mode, or "reduce-overhead": CUDA graphs); ``A_host`` takes uint8 batches
from loader workers in host memory instead of the resident split; ``A_cpu_augment`` augments
per sample in those workers;
``A_workers0`` loads in the main process; ``A_log50`` logs every 50 steps; ``A_bare`` has no
callback, logger or progress bar (Lightning's own loop), ``A_compile_ro_bare`` the same
compiled; ``A_compile_ro_nogm`` is ``A_compile_ro`` without the ``GradientMonitor`` callback,
``A_compile_ro_log50`` logging every 50 steps;
``A_profiled`` writes a cProfile of the timed windows to ``A.prof`` (``A_compile_ro_profiled``:
to ``A_compile_ro.prof``). Each run's results go to ``partial.json`` as it ends.

Usage: ``python benchmarks/throughput.py --project build/bench/bench [--only B A C B A]
[--image-size 64]`` (a bake with ``network=resnet18``; 64x64 images make the GPU the bound); a
run named again is measured again, interleaved with the others, and the table shows the median
of its repeats, so a drifting machine moves every run alike. Prints the table and writes
``throughput.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from phases import Phases, PhaseTimer, table

WINDOW = 40  # steps per timing window
SKIP = 10  # steps of each epoch left out of the timing (loader restart, epoch-end work)


def sync() -> None:
    """Wait for the GPU (a no-op on the CPU, where the script can be smoke-tested)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class WindowTimer(L.Callback):
    """Samples/s over windows of ``WINDOW`` training steps inside an epoch, synchronising the
    GPU only at the window edges; epoch boundaries and validation fall between windows."""

    def __init__(self, epochs_skipped: int = 1, profile: str | None = None) -> None:
        self.epochs_skipped = epochs_skipped
        self.rates: list[float] = []
        self.started: float | None = None
        # --profile: where the host's time goes inside the timed windows (cProfile)
        self.profile = profile
        self.profiler = cProfile.Profile() if profile else None  # "" or None: off

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        fits = batch_idx + WINDOW <= trainer.num_training_batches
        begins = batch_idx >= SKIP and (batch_idx - SKIP) % WINDOW == 0
        if trainer.current_epoch >= self.epochs_skipped and begins and fits:
            sync()
            self.started, self.samples = time.perf_counter(), 0
            if self.profiler is not None:
                self.profiler.enable()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.started is None:
            return
        self.samples += len(batch[1])
        if (batch_idx - SKIP + 1) % WINDOW == 0:
            sync()
            self.rates.append(self.samples / (time.perf_counter() - self.started))
            self.started = None
            if self.profiler is not None:
                self.profiler.disable()
                self.profiler.dump_stats(self.profile)


def synthetic_module(package: str):
    """The project's image data module, reading random uint8 images from memory."""
    image = importlib.import_module(f"{package}.data.image")
    base = importlib.import_module(f"{package}.data.base")
    dataset_class = image.ImageTensorDataset

    class SyntheticImages(image.ImageDataModule):
        def __init__(self, samples: int = 50_000, size: int = 32, **kwargs) -> None:
            super().__init__(profile=False, **kwargs)
            self.samples, self.size = samples, size

        def prepare(self):
            images, labels = synthetic(self.samples, self.size)
            held_out = 1024  # val + test: not timed, kept small
            splits = ["train"] * (self.samples - held_out) + ["val", "test"] * (held_out // 2)
            rows = {s: np.flatnonzero(np.array(splits) == s) for s in ("train", "val", "test")}
            transforms = {"train": self.train_transform}
            datasets = {
                s: dataset_class(images, labels[r], transforms.get(s), rows=r)
                for s, r in rows.items()
            }
            names = [str(c) for c in range(10)]
            state = {"class_names": names, "input_shape": [3, self.size, self.size]}
            state |= {"image_size": [self.size, self.size], "channels": 3}
            ids = [str(i) for i in range(self.samples)]
            label_names = [names[c] for c in labels.tolist()]
            return base.Prepared(
                datasets, labels[rows["train"]].numpy(), ids, label_names, splits,
                "synthetic", [], state,
            )  # fmt: skip

    return SyntheticImages


def synthetic(samples: int, size: int) -> tuple[np.ndarray, torch.Tensor]:
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (samples, 3, size, size), dtype=np.uint8)
    return images, torch.from_numpy(generator.integers(0, 10, samples))


def run_project(
    package: str, project: Path, out: Path, *extra: str, size: int, profile: Path | None = None
) -> dict:
    """A: the project's own ``fit`` command, with a timer and a ``PhaseTimer`` added to its
    callbacks (six empty hooks a step: microseconds)."""
    cli_main = importlib.import_module(f"{package}.cli").cli_main
    module = __name__
    profiled = {"profile": str(profile or "")}
    timer_spec = {"class_path": f"{module}.WindowTimer", "init_args": profiled}
    phase_timer_spec = {"class_path": "phases.PhaseTimer", "init_args": {"skip": SKIP}}
    args = [
        "fit",
        f"--config={project / 'configs/default.yaml'}",
        f"--trainer={project / 'configs/trainer/gpu.yaml'}",
        f"--trainer.logger={project / 'configs/logger/csv.yaml'}",
        f"--run.root={out / 'runs'}",
        f"--data={module}.SyntheticImages",
        "--data.batch_size=512",
        f"--data.size={size}",
        "--data.crop_padding=4",
        "--data.horizontal_flip=true",
        "--data.rotation_degrees=0",
        "--data.translate=0",
        "--trainer.max_epochs=4",
        "--trainer.check_val_every_n_epoch=2",
        "--trainer.limit_test_batches=1",
        *extra,
        "--trainer.callbacks+=" + json.dumps(timer_spec),
        "--trainer.callbacks+=" + json.dumps(phase_timer_spec),
    ]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    cli = cli_main(args)
    timer = next(c for c in cli.trainer.callbacks if isinstance(c, WindowTimer))
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    phases = next(c for c in cli.trainer.callbacks if isinstance(c, PhaseTimer)).phases
    return {"rates": timer.rates, "peak_mb": peak, "phases": phases.medians()}


# A's switches: what a user who knows them sets; A_default runs without them.
SWITCHES = [
    "--data.resident=true",
    "--model.channels_last=true",
    "--model.optimizer.init_args.fused=true",
    "--trainer.deterministic=false",
    "--trainer.benchmark=true",
]
# Batches from loader workers in host memory, not gathered from the resident split.
HOST = ["--data.resident=false", "--data.augment_on_device=true"]
# Lightning's own loop: no callback, logger, progress bar or checkpointing.
BARE = [
    "--trainer.callbacks=[]",
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_checkpointing=false",
]
PARTS = frozenset({"gather", "augment", "clip", "schedule"})  # B's work beyond C's


def without(project: Path, name: str) -> str:
    """``--trainer.callbacks`` with the shipped config's callbacks but the one named ``name``."""
    config = yaml.safe_load((project / "configs/default.yaml").read_text())
    kept = [c for c in config["trainer"]["callbacks"] if not c["class_path"].endswith(name)]
    return "--trainer.callbacks=" + json.dumps(kept)


def run_plain(
    package: str,
    steps: int,
    batch: int,
    size: int,
    parts: frozenset[str] = PARTS,
    compile_mode: str = "",
) -> dict:
    """B (every part) and C (no part): the project's network and augmentation, no framework
    around them. Other subsets show where B's time beyond C's goes."""
    phases = Phases()
    resnet = importlib.import_module(f"{package}.networks.resnet")
    augment = importlib.import_module(f"{package}.data.augment")
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    model = resnet.ResNet([3, size, size], 10, small_input=True).to(device)
    model.to(memory_format=torch.channels_last).train()
    if compile_mode:
        model.compile(mode=compile_mode)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, fused=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps + 10)
    images, labels = synthetic(50_000, size)
    images, labels = torch.from_numpy(images).to(device), labels.to(device)
    mean = images[:4096].float().mean(dim=(0, 2, 3), keepdim=True) / 255
    std = images[:4096].float().std(dim=(0, 2, 3), keepdim=True) / 255
    jitter = augment.BatchAugment(augment.Augmentation(crop_padding=4, horizontal_flip=True))
    order = torch.randperm(len(labels), device=device)

    def standardize(x: torch.Tensor) -> torch.Tensor:
        return ((x.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)

    fixed = images[:batch], labels[:batch]
    resident = standardize(fixed[0])

    def step(i: int) -> None:
        timed = i >= SKIP
        phases.start()
        if "gather" in parts:
            index = order[(i * batch) % (len(order) - batch) :][:batch]
            x, y = images[index], labels[index]
        else:
            x, y = fixed
        if "augment" in parts:
            x = jitter(x)
        x = standardize(x) if parts else resident
        phases.mark("fetch", timed)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.05)
        phases.mark("forward", timed)
        loss.backward()
        phases.mark("backward", timed)
        if "clip" in parts:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if "schedule" in parts:
            schedule.step()
        phases.mark("step", timed)

    torch.cuda.reset_peak_memory_stats()
    rates = []
    for i in range(steps):
        if i >= SKIP and (i - SKIP) % WINDOW == 0:
            torch.cuda.synchronize()
            started = time.perf_counter()
        step(i)
        if i >= SKIP and (i - SKIP + 1) % WINDOW == 0:
            torch.cuda.synchronize()
            rates.append(WINDOW * batch / (time.perf_counter() - started))
    peak = torch.cuda.max_memory_allocated() / 2**20
    return {"rates": rates, "peak_mb": peak, "phases": phases.medians()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, required=True, help="a baked resnet18 project")
    parser.add_argument("--out", type=Path, default=Path("build/throughput"))
    parser.add_argument("--only", nargs="*", help="runs to do (default: all)")
    parser.add_argument("--image-size", type=int, default=32, help="side of the square images")
    options = parser.parse_args()
    project = options.project.resolve()
    sys.path.insert(0, str(project / "src"))
    package = next(p.name for p in (project / "src").iterdir() if (p / "cli.py").is_file())
    globals()["SyntheticImages"] = synthetic_module(package)  # named by --data=__main__....
    options.out.mkdir(parents=True, exist_ok=True)
    steps = SKIP + 6 * WINDOW
    plain = partial(run_plain, package, steps, 512, options.image_size)
    default = partial(run_project, package, project, options.out, size=options.image_size)
    fit = partial(default, *SWITCHES)
    runs = {
        "C": lambda: plain(frozenset()),
        "B": plain,
        **{f"B-{part}": lambda part=part: plain(PARTS - {part}) for part in sorted(PARTS)},
        "A": fit,
        "A_default": default,
        # A_default with one group of A's switches each: which of them the defaults miss
        "A_default_fused": lambda: default("--model.optimizer.init_args.fused=true"),
        "A_default_cudnn": lambda: default(*SWITCHES[3:]),
        "A_compile": lambda: fit("--model.compile=true"),
        "B_compile_ro": lambda: plain(compile_mode="reduce-overhead"),
        "A_compile_ro": lambda: fit("--model.compile=reduce-overhead"),
        "A_host": lambda: fit(*HOST),
        "A_cpu_augment": lambda: fit(*HOST, "--data.augment_on_device=false"),
        "A_workers0": lambda: fit(*HOST, "--data.num_workers=0"),
        "A_profiled": lambda: fit(profile=options.out / "A.prof"),
        "A_compile_ro_profiled": lambda: fit(
            "--model.compile=reduce-overhead", profile=options.out / "A_compile_ro.prof"
        ),
        "A_bare": lambda: fit(*BARE),
        "A_compile_ro_bare": lambda: fit("--model.compile=reduce-overhead", *BARE),
        "A_compile_ro_log50": lambda: fit(
            "--model.compile=reduce-overhead", "--trainer.log_every_n_steps=50"
        ),
        "A_compile_ro_nogm": lambda: fit(
            "--model.compile=reduce-overhead", without(project, "GradientMonitor")
        ),
        "A_log50": lambda: fit("--trainer.log_every_n_steps=50"),
    }
    results: dict = {}
    for name in options.only or list(runs):
        result = runs[name]()
        result["median"] = statistics.median(result["rates"])
        print(f"{name}: {result['median']:,.0f} img/s", flush=True)
        results.setdefault(name, {"repeats": []})["repeats"].append(result)
        # after each run, so a call stopped at its time limit keeps what it measured
        (options.out / "partial.json").write_text(json.dumps(results, indent=2) + "\n")
        gc.collect()
        torch.cuda.empty_cache()
    for run in results.values():
        run["median"] = statistics.median(r["median"] for r in run["repeats"])
        run["peak_mb"] = max(r["peak_mb"] for r in run["repeats"])
        phases = [r["phases"] for r in run["repeats"]]
        run["phases"] = {key: statistics.median(p[key] for p in phases) for key in phases[0]}
    results["device"] = torch.cuda.get_device_name()
    results["torch"], results["lightning"] = torch.__version__, L.__version__
    (options.out / "throughput.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{results['device']}, torch {torch.__version__}, lightning {L.__version__}")
    print(f"{'run':<14}{'img/s (median)':>16}{'repeats':>9}{'peak MB':>10}{'/ B':>7}{'/ C':>7}")
    for name, result in results.items():
        if not isinstance(result, dict):
            continue
        ratio = {r: f"{result['median'] / results[r]['median']:.3f}" for r in "BC" if r in results}
        print(
            f"{name:<14}{result['median']:>16,.0f}{len(result['repeats']):>9}"
            f"{result['peak_mb']:>10,.0f}{ratio.get('B', '-'):>7}{ratio.get('C', '-'):>7}"
        )
    pairs = [("A", "B"), ("A_compile_ro", "B_compile_ro"), ("A_compile_ro_bare", "B_compile_ro")]
    for a, b in [*pairs, ("A_host", "A_cpu_augment")]:
        if a in results and b in results:
            print(f"\nHost time per step, by phase (median of the repeats): {a} and {b}")
            print(table(results[a]["phases"], results[b]["phases"], (a[:6], b[:6])))


if __name__ == "__main__":
    main()
