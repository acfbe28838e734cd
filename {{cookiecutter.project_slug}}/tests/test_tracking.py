"""When W&B may go online, decided before it can prompt."""

from __future__ import annotations

from pathlib import Path

from {{ cookiecutter.package_name }}.tracking import wandb_has_credentials, wandb_offline_reason


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
