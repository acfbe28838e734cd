"""What a run needs to be reproduced, beside its resolved config: package versions, the
machine, and the code's git commit with whether uncommitted changes were in it."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics", "jsonargparse", "numpy")


def git_state(directory: Path) -> dict[str, Any]:
    """The commit checked out in ``directory`` and whether the work tree differs from it."""

    def git(*args: str) -> str:
        command = ["git", "-C", str(directory), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.CalledProcessError):  # no git, or not a repository
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def save_provenance(path: Path, seed: int | None, code_directory: Path) -> Path:
    """``provenance.json``: seed, versions, platform and git state of ``code_directory``."""
    record = {
        "seed": seed,
        "versions": versions(),
        "platform": platform.platform(),
        "git": git_state(code_directory),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
