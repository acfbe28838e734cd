"""Bad settings are refused before anything is written: no run directory, no profile, no
half-made run that blocks its name."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.rundir import CLAIM, claim_run_dir

from .conftest import NO_LOGGER, run


@pytest.mark.parametrize(
    "setting",
    [
        "--data.init_args.batch_size=-4",
        "--data.init_args.batch_size=0",
        "--data.init_args.val_fraction=1.5",
        "--data.init_args.num_workers=-1",
        "--model.lr=-1",
        "--model.lr=0",
        "--model.label_smoothing=1.5",
    ],
)
def test_values_out_of_bounds_are_refused_when_parsed(
    tmp_path: Path, capsys: pytest.CaptureFixture, setting: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run("fit", tmp_path, *NO_LOGGER, setting)
    assert exit_info.value.code != 0
    key = setting.removeprefix("--").partition("=")[0].replace("init_args.", "")
    assert key.rpartition(".")[2] in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written, no name taken


@pytest.mark.parametrize("key", ["max_epochs", "max_steps", "limit_train_batches"])
def test_a_fit_that_would_train_nothing_is_refused(tmp_path: Path, key: str) -> None:
    """Else it tests the untrained model and publishes that as the run's result."""
    with pytest.raises(ValueError, match=rf"--trainer.{key} 0 trains nothing"):
        run("fit", tmp_path, *NO_LOGGER, f"--trainer.{key}=0")
    assert not list(tmp_path.iterdir())


def test_a_run_name_is_claimed_once(tmp_path: Path) -> None:
    """Two fits started at once with one --run.name: the second is told who holds it."""
    run_dir = tmp_path / "taken"
    claim_run_dir(run_dir)
    holder = json.loads((run_dir / CLAIM).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(FileExistsError, match=rf"taken is being started by process {os.getpid()}"):
        run("fit", tmp_path, *NO_LOGGER, "--run.name=taken")
    assert sorted(p.name for p in run_dir.iterdir()) == [CLAIM]  # nothing added to its run


def test_the_claim_of_a_process_that_died_is_taken_over(tmp_path: Path) -> None:
    run_dir = tmp_path / "abandoned"
    run_dir.mkdir()
    dead = {"pid": 2**22 + 12345, "host": socket.gethostname(), "started": "earlier"}
    (run_dir / CLAIM).write_text(json.dumps(dead))
    cli = run("fit", tmp_path, *NO_LOGGER, "--run.name=abandoned", "--trainer.max_epochs=1")
    assert (cli.run_dir / "config.yaml").is_file()
    assert not (run_dir / CLAIM).exists()  # released once the run's config holds the name


def test_a_refused_fit_releases_its_claim(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trains nothing"):
        run("fit", tmp_path, *NO_LOGGER, "--run.name=free", "--trainer.max_epochs=0")
    run("fit", tmp_path, *NO_LOGGER, "--run.name=free", "--trainer.max_epochs=1")
