"""Prune the files the answers don't use, so a generated project carries no dead code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

PACKAGE = "src/{{ cookiecutter.package_name }}"

# Files that belong to one task only; everything else is shared.
TASK_FILES = {
    "image_classification": [
        f"{PACKAGE}/data/augment.py",
        f"{PACKAGE}/data/device_path.py",
        f"{PACKAGE}/data/image.py",
        f"{PACKAGE}/data/image_cache.py",
        f"{PACKAGE}/data/image_checks.py",
        f"{PACKAGE}/data/image_decoding.py",
        f"{PACKAGE}/data/image_profile.py",
        f"{PACKAGE}/data/image_sources.py",
        f"{PACKAGE}/data/resident.py",
        f"{PACKAGE}/data/shards.py",
        f"{PACKAGE}/data/streaming.py",
        f"{PACKAGE}/export_image.py",
        "configs/streaming.yaml",
        f"{PACKAGE}/networks/cnn.py",
        f"{PACKAGE}/networks/resnet.py",
        "tests/test_augment.py",
        "tests/test_image_data.py",
        "tests/test_image_decoding.py",
        "tests/test_export_image.py",
        "tests/test_image_runs.py",
        "tests/test_image_networks.py",
        "tests/test_resident.py",
        "tests/test_streaming.py",
    ],
    "tabular_classification": [
        f"{PACKAGE}/data/tabular.py",
        f"{PACKAGE}/data/table_checks.py",
        f"{PACKAGE}/data/table_encoding.py",
        f"{PACKAGE}/data/table_profile.py",
        f"{PACKAGE}/data/table_reading.py",
        f"{PACKAGE}/data/time_checks.py",
        f"{PACKAGE}/export_table.py",
        f"{PACKAGE}/networks/mlp.py",
        "tests/test_tabular_data.py",
        "tests/test_table_reading.py",
        "tests/test_export_table.py",
        "tests/test_real_tables.py",
        "tests/test_table_runs.py",
        "tests/test_group_split.py",
    ],
}
CI_FILES = [".github", ".pre-commit-config.yaml"]


def files_to_remove(answers: dict) -> list[str]:
    """Relative paths of the files (or folders) these answers don't use."""
    unused = [f for task, files in TASK_FILES.items() if task != answers["task"] for f in files]
    if answers["include_ci"] != "yes":
        unused += CI_FILES
    return unused


def remove(root: Path, relative: str) -> None:
    path = root / relative
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def main(root: Path, answers: dict) -> None:
    for relative in files_to_remove(answers):
        remove(root, relative)


if __name__ == "__main__":
    main(Path.cwd(), json.loads(r"""{{ cookiecutter | tojson }}"""))
