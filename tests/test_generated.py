"""Slow tier: install each baked project into this environment (``--no-deps``: torch and the
rest are here already), run its own test suite, and train it for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from .conftest import CHOICES, bake

pytestmark = pytest.mark.slow
# Once per task, plus the one answer that changes what the generated tests train.
VARIANTS = {
    "image": {"task": "image_classification"},
    "tabular": {"task": "tabular_classification"},
    "resnet": {"task": "image_classification", "network": "resnet18"},
}
# The shipped default config must reach these on the embedded data with the shipped seed.
MIN_TEST_ACCURACY = {"image": 0.97, "tabular": 0.95}
LOGGER_FILES = {
    "wandb": "wandb/offline-run-*",
    "tensorboard": "tensorboard/events.*",
    "csv": "csv/*/metrics.csv",
}


# Only a guard against a hang: a slow or loaded machine makes the suite slower, not red
# (CI stops the whole run at 90 minutes anyway).
TIMEOUT_S = 3600


def run(
    command: list[str], cwd: Path, home: Path, timeout: int = TIMEOUT_S, **env: str
) -> subprocess.CompletedProcess:
    """Run in a clean home with no W&B credentials: the project must go offline by itself."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    environment |= {"HOME": str(home), "NETRC": str(home / ".netrc"), **env}
    # One compute thread a process: the suites run side by side, one per xdist worker, and
    # start processes of their own; threads of one op spinning for a core another process
    # holds made a small network's step 4x slower on two cores.
    environment |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        command,
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def variants(*names: str) -> list:
    """One xdist worker per variant (--dist loadgroup), so no bake is installed twice at once."""
    return [pytest.param(name, marks=pytest.mark.xdist_group(name)) for name in names]


@pytest.fixture(scope="module", params=variants(*VARIANTS))
def installed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    variant = request.param
    project = bake(
        tmp_path_factory.mktemp(variant), project_name=f"Slow {variant}", **VARIANTS[variant]
    )
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(project)]
    with FileLock(Path(sys.prefix) / ".template-tests-install.lock"):  # installs one after another
        subprocess.run(pip, check=True)
    return project


# What each variant's own suite runs in the default tier: everything, or for the ResNet bake
# the file about its networks. The rest of the ResNet bake's suite is the image suite's code
# with every fit on ResNet-18 on the CPU: 425 passed in RESNET_WHOLE_S on one of two busy
# cores (measured; its learning-rate test alone trains ResNet-18 for 670 s), beyond the
# default run's budget, so it is the heavy tier (./scripts/test --heavy).
SUITES = {"image": [], "tabular": [], "resnet": ["tests/test_image_networks.py"]}
RESNET_WHOLE_S = 3460


def own_suite(installed: Path, tmp_path: Path, files: list[str], timeout: int = TIMEOUT_S) -> None:
    pytest_command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    result = run([*pytest_command, "--durations=10", *files], installed, tmp_path, timeout)
    print(result.stdout[-2500:])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_generated_suite_passes(installed: Path, tmp_path: Path) -> None:
    own_suite(installed, tmp_path, SUITES[installed.name.removeprefix("slow-")])


@pytest.mark.heavy
@pytest.mark.parametrize("installed", variants("resnet"), indirect=True)
def test_the_resnet_bakes_whole_suite_passes(installed: Path, tmp_path: Path) -> None:
    own_suite(installed, tmp_path, [], timeout=4 * RESNET_WHOLE_S)


@pytest.mark.parametrize("installed", variants(*MIN_TEST_ACCURACY), indirect=True)
def test_default_training_reaches_its_accuracy(installed: Path, tmp_path: Path) -> None:
    """The quickstart's job: the console script with the shipped config, on the CPU."""
    variant = installed.name.removeprefix("slow-")
    script = Path(sys.executable).parent / installed.name
    command = [
        str(script),
        "fit",
        "--config=configs/default.yaml",
        "--trainer=configs/trainer/cpu.yaml",
    ]
    started = time.monotonic()
    result = run(
        [*command, "--trainer.enable_progress_bar=false", f"--run.root={tmp_path}"],
        installed,
        tmp_path,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-4000:]
    (run_dir,) = tmp_path.glob("*-fit")
    accuracy = json.loads((run_dir / "test_metrics.json").read_text())["test/acc"]
    print(f"{variant}: test/acc {accuracy:.4f} in {seconds:.0f} s")
    assert accuracy >= MIN_TEST_ACCURACY[variant]
    assert "GradientMonitor:" not in result.stderr  # a healthy full run raises no alert
    assert f"Run directory: {run_dir}" in result.stdout
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert list(run_dir.glob(LOGGER_FILES["wandb"]))  # the default logger went offline by itself


@pytest.mark.parametrize("logger", CHOICES["logger"])
def test_default_logger_answer(tmp_path: Path, logger: str) -> None:
    """The logger answer sets the default: a short run with the shipped config writes its files."""
    project = bake(tmp_path, logger=logger, project_name=f"Logger {logger}")
    package = next((project / "src").iterdir()).name
    root = tmp_path / "runs"
    quick = [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=2",
    ]
    command = [
        sys.executable,
        "-m",
        package,
        "fit",
        "--config=configs/default.yaml",
        f"--run.root={root}",
    ]
    result = run([*command, *quick], project, tmp_path, PYTHONPATH=str(project / "src"))
    assert result.returncode == 0, result.stderr[-4000:]
    (run_dir,) = root.iterdir()
    written = {"wandb", "tensorboard", "csv"} & {p.name for p in run_dir.iterdir()}
    if logger == "none":
        assert not written
    else:
        assert written == {logger}
        assert list(run_dir.glob(LOGGER_FILES[logger]))
