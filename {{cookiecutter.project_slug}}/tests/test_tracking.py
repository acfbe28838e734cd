"""When W&B may go online, decided before it can prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.tracking import wandb_has_credentials, wandb_offline_reason

from .conftest import LOGGERS, run


def test_api_key_in_environment_counts_as_credentials(tmp_path: Path) -> None:
    assert wandb_has_credentials({"WANDB_API_KEY": "x" * 40, "NETRC": str(tmp_path / "none")})


def test_netrc_entry_counts_as_credentials(tmp_path: Path) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    netrc.chmod(0o600)
    assert wandb_has_credentials({"NETRC": str(netrc)})
    assert not wandb_has_credentials(
        {"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.com"}
    )


def test_no_credentials_means_offline_with_a_reason(tmp_path: Path) -> None:
    assert "offline" in wandb_offline_reason({"NETRC": str(tmp_path / "none")})


def test_an_explicit_wandb_mode_is_respected(tmp_path: Path) -> None:
    assert wandb_offline_reason({"WANDB_MODE": "disabled", "NETRC": str(tmp_path / "none")}) is None


def test_each_command_in_one_process_logs_to_its_own_wandb_run(tmp_path: Path) -> None:
    """Two fits in one process (a test, a notebook): the second gets its own W&B run, not
    the first one's, which Lightning would reuse while it is still open."""
    wandb = pytest.importorskip("wandb")
    logger = f"--trainer.logger={LOGGERS / 'wandb.yaml'}"
    first = run("fit", tmp_path, "--run.name=first", logger, "--trainer.max_epochs=1")
    second = run("fit", tmp_path, "--run.name=second", logger, "--trainer.max_epochs=1")
    ids = [cli.trainer.logger.experiment.id for cli in (first, second)]
    assert ids[0].startswith("first-") and ids[1].startswith("second-")
    assert wandb.run is None  # each command finished its own run
    assert list((second.run_dir / "wandb").glob("offline-run-*"))
