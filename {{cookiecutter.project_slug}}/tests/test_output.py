"""What a newcomer's first run prints: no misleading warnings, no library noise."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from .conftest import NO_LOGGER, run

# Lightning's reading of fit(ckpt_path=None) next to an OnExceptionCheckpoint (Resumable).
RESUME_WARNINGS = ("was called without a model", "there is no last checkpoint available")


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
