"""Shared fixtures: every test runs offline, on the CPU, in a temporary run root."""

from __future__ import annotations

import csv
import importlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from {{ cookiecutter.package_name }}.cli import ProjectCLI, cli_main

PACKAGE = "{{ cookiecutter.package_name }}"
PROJECT = Path(__file__).resolve().parents[1]
CONFIG = PROJECT / "configs" / "default.yaml"
LOGGERS = PROJECT / "configs" / "logger"
TRAINERS = PROJECT / "configs" / "trainer"
# A real but short run: two epochs of a few batches, quiet, on one CPU process.
QUICK = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=4",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.limit_predict_batches=2",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
NO_LOGGER = ["--trainer.logger=false"]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No W&B credentials and no network, whatever the developer's machine has."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


def run(subcommand: str, root: Path, *args: str, config: Path = CONFIG) -> ProjectCLI:
    """Run a subcommand in-process with the shipped config, writing runs under ``root``."""
    return cli_main([subcommand, f"--config={config}", f"--run.root={root}", *QUICK, *args])


def in_fresh_process(subcommand: str, config: Path, *args: str) -> subprocess.CompletedProcess:
    """Run a subcommand in a new interpreter: nothing cached in this process can help it."""
    command = [sys.executable, "-m", PACKAGE, subcommand, f"--config={config}"]
    return subprocess.run(
        [*command, *args, "--trainer.enable_progress_bar=false"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def logged(cli: ProjectCLI, key: str) -> list[float]:
    """Every value of ``key`` the CSV logger wrote in this command's version folder."""
    rows = csv.DictReader((Path(cli.trainer.logger.log_dir) / "metrics.csv").open())
    return [float(row[key]) for row in rows if row.get(key)]


def newest_output(run_dir: Path, filename: str) -> Path:
    """``filename`` as the latest command on a run wrote it: a later test or predict in
    ``outputs/``, a command that started the run in the run directory itself."""
    written = [*(run_dir / "outputs").glob(f"*/{filename}"), *run_dir.glob(filename)]
    assert written, f"no {filename} in {run_dir}"
    return max(written, key=lambda p: p.stat().st_mtime_ns)


def default_config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def datamodule_class() -> type:
    module, _, name = default_config()["data"]["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.fixture(scope="session")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> ProjectCLI:
    """One short real fit (CSV logger) shared by the tests that only inspect its results."""
    root = tmp_path_factory.mktemp("runs")
    return run("fit", root, "--run.name=shared", f"--trainer.logger={LOGGERS / 'csv.yaml'}")


def trainer_at(training: bool = True, epoch: int = 0, batch: int = 0, rank: int = 0):
    """What the data module reads of its trainer: the phase, epoch, batch and rank."""
    progress = SimpleNamespace(current=SimpleNamespace(ready=batch))
    loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress))
    return SimpleNamespace(training=training, current_epoch=epoch, fit_loop=loop, global_rank=rank)
