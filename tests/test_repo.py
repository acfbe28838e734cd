"""The template repository itself: its own code is lint-clean and CI runs the README's command."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import TEMPLATE

LINTED = ("hooks", "tests", "benchmarks")  # the generated project lints itself


def test_hooks_tests_and_benchmarks_are_ruff_clean() -> None:
    for command in (["check"], ["format", "--check"]):
        ruff = [sys.executable, "-m", "ruff", *command, "--no-cache", *LINTED]
        result = subprocess.run(ruff, cwd=TEMPLATE, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_ci_runs_the_readme_test_command() -> None:
    readme = (TEMPLATE / "README.md").read_text()
    assert "./scripts/demo" in readme and "./scripts/test" in readme
    assert "./scripts/test" in (TEMPLATE / ".ci" / "run").read_text()
    for script in ("demo", "test", "bootstrap"):
        assert os.access(TEMPLATE / "scripts" / script, os.X_OK), script
