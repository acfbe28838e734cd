"""Every picture a run makes is a file in the run directory and reaches the active logger."""

from __future__ import annotations

import csv
import inspect
import subprocess
import sys
from pathlib import Path

from .conftest import CONFIG, LOGGERS, PACKAGE, QUICK, datamodule_class, run

PICTURES = {
    "profile_class_balance",  # fit start: the data profile
    "val_confusion_matrix",  # each validation end
    "curves",  # fit end
    "confusion_matrix",  # test
    "reliability",
    "attributions",
    "dead_units",
}
if "augment" in inspect.signature(datamodule_class()).parameters:  # images
    PICTURES |= {"profile_samples", "val_predictions", "first_layer_filters", "activation_maps"}
EPOCHS = 2  # QUICK's max_epochs: one validation picture each


def test_every_picture_reaches_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli = run("fit", tmp_path, f"--trainer.logger={LOGGERS / 'tensorboard.yaml'}")
    assert {p.stem for p in (cli.run_dir / "plots").glob("*.png")} >= PICTURES
    events = EventAccumulator(str(cli.run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {tag.removeprefix("plots/") for tag in events.Tags()["images"]} >= PICTURES
    steps = [event.step for event in events.Images("plots/val_confusion_matrix")]
    assert len(steps) == EPOCHS and steps == sorted(set(steps))  # one per validation, in order
    assert "test/ece" in events.Tags()["scalars"]
    assert any(tag.startswith("dead_units/") for tag in events.Tags()["scalars"])
    assert events.Tags()["graph"] and "network" in str(events.Graph())  # the model's graph


def test_every_picture_reaches_wandb_offline(tmp_path: Path) -> None:
    # A fresh process: W&B's background service must not outlive this test's interpreter.
    fit = [sys.executable, "-m", PACKAGE, "fit", f"--config={CONFIG}", f"--run.root={tmp_path}"]
    logger = f"--trainer.logger={LOGGERS / 'wandb.yaml'}"
    done = subprocess.run([*fit, *QUICK, logger], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    media = list(tmp_path.glob("*/wandb/offline-run-*/files/media/images/plots/*.png"))
    sent = {path.stem.rsplit("_", 2)[0] for path in media}  # <key>_<step>_<hash>.png
    assert sent >= PICTURES
    assert sum(path.stem.startswith("val_confusion_matrix_") for path in media) == EPOCHS


def test_csv_runs_keep_the_pictures_as_files(tmp_path: Path) -> None:
    cli = run("fit", tmp_path, f"--trainer.logger={LOGGERS / 'csv.yaml'}")
    assert {p.stem for p in (cli.run_dir / "plots").glob("*.png")} >= PICTURES
    with (Path(cli.trainer.logger.log_dir) / "metrics.csv").open() as file:
        columns = set(next(csv.reader(file)))
    assert {"test/ece", "val/acc", "train/loss"} <= columns
