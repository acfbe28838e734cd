"""Your own images end to end: fit on a folder, predict new files, no train/serve skew."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from .conftest import NO_LOGGER, in_fresh_process, newest_output, run
from .test_image_data import write_folder


def test_fit_on_a_folder_then_predict_new_files(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data")
    cache = f"--data.cache_dir={tmp_path / 'cache'}"  # not the project's .cache/images
    fitted = run(
        "fit", tmp_path / "runs", *NO_LOGGER, f"--data.root={data}", cache, "--run.name=own"
    )
    assert fitted.datamodule.class_names == ["0", "1", "2"]
    assert (fitted.run_dir / "profile.json").is_file()
    assert (fitted.run_dir / "plots" / "profile_samples.png").is_file()
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1  # decoded once, kept
    inbox = tmp_path / "inbox"
    for i, source in enumerate(sorted(data.rglob("*.png"))[:7]):
        target = inbox / ("nested" if i % 2 else "") / f"new-{i}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    checkpoint = fitted.run_dir / "checkpoints" / "last.ckpt"
    run("predict", tmp_path / "runs", *NO_LOGGER, f"--ckpt_path={checkpoint}",
        f"--data.root={data}", f"--data.predict_root={inbox}")  # fmt: skip
    rows = list(csv.DictReader(newest_output(fitted.run_dir, "predictions.csv").open()))
    assert sorted(row["id"] for row in rows) == sorted(
        p.relative_to(inbox).as_posix() for p in inbox.rglob("*.png")
    )


def test_predict_in_a_fresh_process_without_the_training_data(tmp_path: Path) -> None:
    """Everything fitted comes from the checkpoint: moving the training images away changes
    nothing in the predictions."""
    data = write_folder(tmp_path / "data")
    cache = f"--data.cache_dir={tmp_path / 'cache'}"  # not the project's .cache/images
    fitted = run(
        "fit", tmp_path / "runs", *NO_LOGGER, f"--data.root={data}", cache, "--run.name=own"
    )
    inbox = tmp_path / "inbox"
    shutil.copytree(data / "2", inbox)
    checkpoint = fitted.run_dir / "checkpoints" / "last.ckpt"
    arguments = [f"--ckpt_path={checkpoint}", f"--data.predict_root={inbox}"]
    run("predict", tmp_path / "runs", *NO_LOGGER, f"--data.root={data}", *arguments)
    in_training_process = newest_output(fitted.run_dir, "predictions.csv").read_text()

    data.rename(tmp_path / "moved-away")
    result = in_fresh_process("predict", fitted.run_dir / "config.yaml", *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    assert newest_output(fitted.run_dir, "predictions.csv").read_text() == in_training_process
    assert len(in_training_process.splitlines()) == 1 + 20
