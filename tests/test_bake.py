"""Fast tier: every option combination bakes exactly its files, renders fully and lints clean."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from .conftest import COMBINATIONS, bake, combination_id

SHARED = {
    ".cookiecutter.json",
    ".gitignore",
    "README.md",
    "pyproject.toml",
    "configs/default.yaml",
    "configs/sweep/space.yaml",
    "benchmarks/serve_load.py",
    "benchmarks/startup.py",
    "slurm/sweep.sbatch",
    "slurm/train.sbatch",
    *(f"configs/logger/{name}.yaml" for name in ("csv", "tensorboard", "wandb")),
    *(f"configs/trainer/{n}.yaml" for n in ("cpu", "gpu", "ddp", "ddp_cpu", "fsdp", "deepspeed")),
    *(
        f"src/my_project/{name}.py"
        for name in (
            "__init__",
            "__main__",
            "attribution",
            "benchmark",
            "checkpoints",
            "cli",
            "commands",
            "decision",
            "evaluation",
            "export",
            "insides",
            "lr_rules",
            "preprocessing",
            "parser",
            "provenance",
            "quiet",
            "reports",
            "rundir",
            "schedulers",
            "serve",
            "strategies",
            "system",
            "tracking",
            "trainer",
            "callbacks/__init__",
            "callbacks/energy",
            "callbacks/gradient_monitor",
            "callbacks/gradient_trends",
            "callbacks/prediction_writer",
            "callbacks/progress_bar",
            "callbacks/resumable",
            "callbacks/test_reports",
            "callbacks/training_curves",
            "callbacks/trial_pruning",
            "callbacks/validation_plots",
            "callbacks/validation_reports",
            "data/__init__",
            "data/base",
            "data/checks",
            "data/drift",
            "data/findings",
            "data/groups",
            "data/loading",
            "data/manifest",
            "data/sampling",
            "data/split",
            "data/state",
            "experiments/__init__",
            "experiments/confirmation",
            "experiments/cross_validation",
            "experiments/launch",
            "experiments/out_of_fold",
            "experiments/space",
            "experiments/study",
            "experiments/study_report",
            "experiments/sweep",
            "networks/__init__",
        )
    ),
    *(
        f"tests/{name}.py"
        for name in (
            "__init__",
            "conftest",
            "probe",
            "test_artifacts",
            "test_attribution",
            "test_benchmark",
            "test_callbacks",
            "test_cli",
            "test_cross_validation",
            "test_data",
            "test_data_state",
            "test_decision",
            "test_distributed",
            "test_drift",
            "test_energy",
            "test_evaluation",
            "test_exact_resume",
            "test_export",
            "test_groups",
            "test_insides",
            "test_learning_rate",
            "test_model",
            "test_output",
            "test_processes",
            "test_provenance",
            "test_refusals",
            "test_resume",
            "test_serve",
            "test_strategies",
            "test_sweep",
            "test_tracking",
        )
    ),
}
TASK = {
    "image_classification": {
        "src/my_project/data/augment.py",
        "src/my_project/data/device_path.py",
        "src/my_project/data/image.py",
        "src/my_project/data/image_cache.py",
        "src/my_project/data/image_checks.py",
        "src/my_project/data/image_decoding.py",
        "src/my_project/data/image_profile.py",
        "src/my_project/data/image_sources.py",
        "src/my_project/data/resident.py",
        "src/my_project/data/shards.py",
        "src/my_project/data/streaming.py",
        "src/my_project/export_image.py",
        "configs/streaming.yaml",
        "src/my_project/networks/cnn.py",
        "src/my_project/networks/resnet.py",
        "tests/test_augment.py",
        "tests/test_image_data.py",
        "tests/test_image_decoding.py",
        "tests/test_export_image.py",
        "tests/test_image_networks.py",
        "tests/test_image_runs.py",
        "tests/test_resident.py",
        "tests/test_streaming.py",
    },
    "tabular_classification": {
        "src/my_project/data/tabular.py",
        "src/my_project/data/table_checks.py",
        "src/my_project/data/table_encoding.py",
        "src/my_project/data/table_profile.py",
        "src/my_project/data/table_reading.py",
        "src/my_project/data/time_checks.py",
        "src/my_project/export_table.py",
        "src/my_project/networks/mlp.py",
        "tests/test_tabular_data.py",
        "tests/test_table_reading.py",
        "tests/test_export_table.py",
        "tests/test_real_tables.py",
        "tests/test_table_runs.py",
        "tests/test_group_split.py",
    },
}
CI = {".github/workflows/ci.yml", ".pre-commit-config.yaml"}
JINJA = re.compile(r"{{|{%|{#")


def expected_files(answers: dict) -> set[str]:
    return SHARED | TASK[answers["task"]] | (CI if answers["include_ci"] == "yes" else set())


def files(project: Path) -> set[str]:
    return {
        str(p.relative_to(project))
        for p in project.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def ruff(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--no-cache", "."],
        cwd=project,
        capture_output=True,
        text=True,
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

    answers_file = json.loads((project / ".cookiecutter.json").read_text())
    assert {k: answers_file[k] for k in answers} == answers  # what `cruft link` needs later


HOSTILE_NAMES = [
    '  Élan\'s "Quoted" Project  ',
    "3D Vision",
    "O'Connor \\ Back-slash",
    "Übergrößen-Prüfung",
    "a--b__c  d",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_odd_but_legal_names_bake_into_valid_projects(tmp_path: Path, name: str) -> None:
    description = "Says \"hi\" \\ and 'bye'; {braces} #hash"
    project = bake(tmp_path, project_name=name, description=description, author=name)
    package = next((project / "src").iterdir()).name
    assert package.isascii() and package.isidentifier() and not package[0].isdigit()
    assert project.name.isascii() and re.fullmatch(r"[a-z0-9][a-z0-9-]*", project.name)
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert meta["name"] == project.name
    assert meta["description"] == description  # quotes and backslashes survive TOML
    assert meta["authors"][0]["name"] == name
    assert meta["scripts"][project.name] == f"{package}.commands:main"
    config = yaml.safe_load((project / "configs" / "default.yaml").read_text())
    assert config["model"]["network"]["class_path"].startswith(f"{package}.")
    assert json.loads((project / ".cookiecutter.json").read_text())["project_name"] == name
    assert ruff(project, "check").returncode == 0
