"""Bake helpers. Every bake happens under a temporary HOME so cookiecutter's replay files and
rendered hook scripts never land on the developer's machine."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]
CHOICES = {
    k: v
    for k, v in json.loads((TEMPLATE / "cookiecutter.json").read_text()).items()
    if isinstance(v, list)
}
# Networks each task supports ("auto" picks the task's own); other pairs are refused.
NETWORKS = {
    "image_classification": ["auto", "small_cnn", "resnet18"],
    "tabular_classification": ["auto", "mlp"],
}
# Every supported combination of the answers that change what is generated.
COMBINATIONS = [
    {
        "task": task,
        "network": network,
        "logger": logger,
        "accelerator": accelerator,
        "include_ci": ci,
    }
    for task in CHOICES["task"]
    for network in NETWORKS[task]
    for logger in CHOICES["logger"]
    for accelerator in CHOICES["accelerator"]
    for ci in CHOICES["include_ci"]
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
    return Path(
        cookiecutter(
            str(TEMPLATE), no_input=True, output_dir=str(output_dir), extra_context=answers
        )
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--heavy",
        action="store_true",
        help="also run the heavy tier: the ResNet bake's whole generated suite (about an "
        "hour on two cores, beyond the default run's 30 minutes)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Heavy tests are skipped, with the command that runs them, unless --heavy is given:
    tiered by time, and every skip names itself in the summary (-ra)."""
    if config.getoption("--heavy"):
        return
    skip = pytest.mark.skip(reason="heavy tier, about an hour on two cores: ./scripts/test --heavy")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)
