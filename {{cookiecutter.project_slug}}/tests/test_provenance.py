"""Provenance: what reproduces a run, saved beside its config."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch

from {{ cookiecutter.package_name }}.provenance import git_state


def git(directory: Path, *args: str) -> None:
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", *identity, "-C", str(directory), *args], check=True, capture_output=True)


def test_git_state_names_the_commit_and_uncommitted_changes(tmp_path: Path) -> None:
    assert git_state(tmp_path) == {"commit": None, "dirty": None}  # not a repository
    git(tmp_path, "init", "-q")
    (tmp_path / "train.py").write_text("lr = 0.1\n")
    git(tmp_path, "add", "train.py")
    git(tmp_path, "commit", "-q", "-m", "first")
    clean = git_state(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "train.py").write_text("lr = 0.2\n")
    assert git_state(tmp_path) == {"commit": clean["commit"], "dirty": True}


def test_fit_saves_seed_versions_and_git_state(fitted) -> None:
    saved = json.loads((fitted.run_dir / "provenance.json").read_text())
    assert saved["seed"] == 42
    assert torch.__version__.startswith(saved["versions"]["torch"])  # + the local build tag
    assert set(saved["git"]) == {"commit", "dirty"}
