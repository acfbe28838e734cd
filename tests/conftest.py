"""Bake helpers. Every bake happens under a temporary HOME so cookiecutter's replay files and
rendered hook scripts never land on the developer's machine."""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]
CHOICES = {k: v for k, v in json.loads((TEMPLATE / "cookiecutter.json").read_text()).items() if isinstance(v, list)}
# Every supported combination of the answers that change which files or code are generated.
COMBINATIONS = [
    dict(zip(("task", "logger", "accelerator", "include_ci"), values, strict=True))
    for values in itertools.product(
        CHOICES["task"], CHOICES["logger"], CHOICES["accelerator"], CHOICES["include_ci"]
    )
]


def combination_id(answers: dict) -> str:
    return "-".join(str(v) for v in answers.values())


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    os.environ["HOME"] = str(home)
    os.environ["TMPDIR"] = str(home)
    tempfile.tempdir = None  # re-read TMPDIR
    return home


def bake(output_dir: Path, **answers: str) -> Path:
    """Bake the template with ``answers`` (defaults for the rest); return the project path."""
    return Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(output_dir), extra_context=answers))
