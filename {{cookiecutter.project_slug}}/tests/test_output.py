"""What a newcomer's first run prints: no misleading warnings, no library noise."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from .conftest import CONFIG, LOGGERS, NO_LOGGER, PACKAGE, QUICK, run

# Lightning's reading of fit(ckpt_path=None) next to an OnExceptionCheckpoint (Resumable).
RESUME_WARNINGS = ("was called without a model", "there is no last checkpoint available")


# What no line of a default run may hold: warnings, adverts, terminal control codes.
NOISE = ("Warning", "WARNING", "deprecated", "💡", "\x1b[", "\r")


def messages(recwarn: pytest.WarningsRecorder) -> list[str]:
    return [str(w.message) for w in recwarn]


def test_a_fresh_fit_starts_without_resume_warnings(tmp_path: Path, recwarn) -> None:
    warnings.simplefilter("always")  # a warning shown once before in this process counts too
    run("fit", tmp_path, *NO_LOGGER, "--trainer.max_epochs=1")
    said = messages(recwarn)
    assert not [m for m in said if any(text in m for text in RESUME_WARNINGS)], said


def test_tune_starts_without_resume_warnings(tmp_path: Path, recwarn) -> None:
    warnings.simplefilter("always")
    run("tune", tmp_path, *NO_LOGGER, "--num_training=5")
    said = messages(recwarn)
    assert not [m for m in said if any(text in m for text in RESUME_WARNINGS)], said


def test_a_default_fit_prints_nothing_the_user_cannot_act_on(tmp_path: Path) -> None:
    """A first fit as a log file or CI sees it (not a terminal), W&B offline without a key."""
    bars_and_summary = [a for a in QUICK if "progress_bar" not in a and "model_summary" not in a]
    command = [sys.executable, "-m", PACKAGE, "fit", f"--config={CONFIG}", *bars_and_summary]
    logger = f"--trainer.logger={LOGGERS / 'wandb.yaml'}"
    result = subprocess.run(
        [*command, logger, f"--run.root={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    printed = result.stdout + result.stderr
    assert result.returncode == 0, printed[-3000:]
    noise = [line for line in printed.splitlines() if any(text in line for text in NOISE)]
    assert not noise, noise
    assert re.search(r"^Epoch 2/2: val/loss [0-9.]+, val/acc", printed, re.MULTILINE), printed
    assert "Upload later: wandb sync" in printed
    f1 = [float(value) for value in re.findall(r"f1_macro[ =]+([0-9.]+)", printed)]
    assert f1 and max(f1) <= 1
