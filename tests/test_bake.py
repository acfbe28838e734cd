"""Fast tier: every option combination bakes exactly its files, renders fully and lints clean."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from .conftest import COMBINATIONS, bake, combination_id

SHARED = {
    ".gitignore",
    "README.md",
    "pyproject.toml",
    "configs/default.yaml",
    *(f"configs/logger/{name}.yaml" for name in ("csv", "tensorboard", "wandb")),
    *(f"configs/trainer/{n}.yaml" for n in ("cpu", "gpu", "ddp", "ddp_cpu", "fsdp", "deepspeed")),
    *(
        f"src/my_project/{name}.py"
        for name in (
            "__init__", "__main__", "cli", "preprocessing", "reports", "rundir", "schedulers",
            "system", "tracking", "trainer", "callbacks/__init__", "callbacks/gradient_monitor",
            "data/__init__", "data/loading", "data/split", "networks/__init__",
        )
    ),  # fmt: skip
    *(
        f"tests/{name}.py"
        for name in (
            "__init__", "conftest", "test_callbacks", "test_cli", "test_data", "test_model",
            "test_processes", "test_tracking",
        )
    ),  # fmt: skip
}
TASK = {
    "image_classification": {
        "src/my_project/data/image.py",
        "src/my_project/networks/cnn.py",
        "src/my_project/networks/resnet.py",
        "tests/test_image_data.py",
    },
    "tabular_classification": {
        "src/my_project/data/tabular.py",
        "src/my_project/networks/mlp.py",
        "tests/test_tabular_data.py",
    },
}
CI = {".github/workflows/ci.yml", ".pre-commit-config.yaml"}
JINJA = re.compile(r"{{|{%|{#|cookiecutter\.")


def expected_files(answers: dict) -> set[str]:
    return SHARED | TASK[answers["task"]] | (CI if answers["include_ci"] == "yes" else set())


def files(project: Path) -> set[str]:
    return {
        str(p.relative_to(project)) for p in project.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def ruff(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--no-cache", "."], cwd=project, capture_output=True, text=True
    )


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combination_id)
def test_combination(tmp_path: Path, answers: dict) -> None:
    project = bake(tmp_path, **answers)
    assert files(project) == expected_files(answers)

    leftovers = [f for f in files(project) if JINJA.search((project / f).read_text())]
    assert not leftovers, f"unrendered Jinja in {leftovers}"

    tomllib.loads((project / "pyproject.toml").read_text())
    for config in project.rglob("*.yaml"):
        assert yaml.safe_load(config.read_text()) is not None, config

    check, fmt = ruff(project, "check"), ruff(project, "format", "--check")
    assert check.returncode == 0, check.stdout
    assert fmt.returncode == 0, fmt.stdout
