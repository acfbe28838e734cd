"""The update path: a project baked from an older template takes in a newer one with cruft,
and the user's own edits survive."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import TEMPLATE

IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "build", "__pycache__", ".pytest_cache", ".ruff_cache"
)


def git(cwd: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args]
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout


def cruft(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cruft", *args]
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )


def test_cruft_update_keeps_user_edits(tmp_path: Path) -> None:
    template = tmp_path / "template"
    shutil.copytree(TEMPLATE, template, ignore=IGNORED)
    git(template, "init", "-q")
    git(template, "add", "-A")
    git(template, "commit", "-qm", "old template")

    created = cruft(tmp_path, "create", str(template), "--no-input", "--output-dir", str(tmp_path))
    assert created.returncode == 0, created.stderr
    project = tmp_path / "my-project"
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "baked")

    config = project / "configs" / "default.yaml"
    config.write_text(config.read_text().replace("max_epochs: 30", "max_epochs: 50"))
    (project / "NOTES.md").write_text("My own notes.\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "my edits")

    slug = template / "{{cookiecutter.project_slug}}"
    gpu = slug / "configs" / "trainer" / "gpu.yaml"
    gpu.write_text(gpu.read_text() + "benchmark: true  # new in the template\n")
    (slug / "configs" / "trainer" / "two_gpus.yaml").write_text("accelerator: gpu\ndevices: 2\n")
    git(template, "add", "-A")
    git(template, "commit", "-qm", "newer template")

    updated = cruft(project, "update", "--skip-apply-ask")
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert (
        "benchmark: true  # new in the template"
        in (project / "configs/trainer/gpu.yaml").read_text()
    )
    assert (project / "configs" / "trainer" / "two_gpus.yaml").is_file()
    assert "max_epochs: 50" in config.read_text()  # the user's edit survived
    assert (project / "NOTES.md").read_text() == "My own notes.\n"
    assert git(template, "rev-parse", "HEAD").strip() in (project / ".cruft.json").read_text()
