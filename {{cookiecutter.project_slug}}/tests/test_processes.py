"""What needs a fresh process: the entry point, seeded loading, and W&B with no terminal or
a terminal. DDP has tests/test_distributed.py."""

from __future__ import annotations

import importlib.util
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }} import commands
from {{ cookiecutter.package_name }}.commands import EXPERIMENT_HELP, SUBCOMMAND_HELP

from .conftest import CONFIG, LOGGERS, PROJECT, QUICK, ProjectCLI

PACKAGE = "{{ cookiecutter.package_name }}"
WANDB = [f"--trainer.logger={LOGGERS / 'wandb.yaml'}"]


def command(root: Path, *args: str) -> list[str]:
    fit = [sys.executable, "-m", PACKAGE, "fit", f"--config={CONFIG}"]
    return [*fit, f"--run.root={root}", *QUICK, *args]


def no_credentials(home: Path) -> dict[str, str]:
    """The environment of a machine that never ran `wandb login`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return env | {
        "HOME": str(home),
        "NETRC": str(home / ".netrc"),
        "WANDB_CONFIG_DIR": str(home / ".config"),
    }


# Runs the entry point as `python -m` does, then names the heavy packages it loaded.
LOADED = """
import json, runpy, sys
sys.argv[0] = "prog"
try:
    runpy.run_module("{package}", run_name="__main__")
except SystemExit as stopped:
    print("exit", stopped.code)
heavy = ("torch", "lightning", "optuna")
print("loaded", json.dumps([name for name in heavy if name in sys.modules]))
"""


@pytest.mark.parametrize(
    "args, unloaded",
    [(["--help"], {"torch", "lightning", "optuna"}), (["sweep", "--help"], {"torch", "lightning"}),
     (["cv", "--help"], {"torch", "lightning"})],
)  # fmt: skip
def test_the_command_list_and_experiments_help_load_no_deep_learning_stack(args, unloaded):
    code = LOADED.format(package=PACKAGE)
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert "exit 0" in result.stdout, result.stderr[-2000:]
    loaded = set(json.loads(result.stdout.rsplit("loaded ", 1)[1]))
    assert not loaded & unloaded, loaded
    if args == ["--help"]:  # the full parser's subcommands, no other, each with its line
        assert commands.subcommands() == list(ProjectCLI.every_subcommand())
        for subcommand in ProjectCLI.every_subcommand():
            line = SUBCOMMAND_HELP[subcommand]
            assert re.search(rf"^  {subcommand} +{re.escape(line)}$", result.stdout, re.M)
        for experiment, line in EXPERIMENT_HELP.items():
            assert re.search(rf"^  {experiment} +{re.escape(line)}$", result.stdout, re.M)


def test_no_command_prints_the_list_and_fails() -> None:
    result = subprocess.run([sys.executable, "-m", PACKAGE], capture_output=True, text=True)
    assert result.returncode == 2 and "commands:" in result.stderr and not result.stdout


# Prints the hash of the first training batch after writing the split manifest to argv[3].
FIRST_BATCH = """
import hashlib, sys
from pathlib import Path
import lightning as L
from tests.conftest import datamodule_class
seed, workers, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
L.seed_everything(seed, workers=True)
datamodule = datamodule_class()(seed=seed, num_workers=workers, profile=False)
datamodule.write_reports(out)
x, y = next(iter(datamodule.train_dataloader()))
print(hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest())
"""


def first_batch(seed: int, workers: int, out: Path) -> subprocess.Popen:
    command = [sys.executable, "-c", FIRST_BATCH, str(seed), str(workers), str(out)]
    pipe = subprocess.PIPE
    return subprocess.Popen(command, cwd=PROJECT, stdout=pipe, stderr=pipe, text=True)


def test_same_seed_same_split_and_first_batch_across_processes(tmp_path: Path) -> None:
    runs = {  # (seed, num_workers, attempt): a separate process each, started together
        key: first_batch(key[0], key[1], tmp_path / str(key))
        for key in [(3, 0, 1), (3, 0, 2), (3, 2, 1), (3, 2, 2), (4, 0, 1)]
    }
    batch, manifest = {}, {}
    for key, process in runs.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        batch[key] = out.split()[-1]
        manifest[key] = (tmp_path / str(key) / "split_manifest.csv").read_text()
    for workers in (0, 2):
        assert batch[(3, workers, 1)] == batch[(3, workers, 2)]
        assert manifest[(3, workers, 1)] == manifest[(3, workers, 2)] == manifest[(3, 0, 1)]
    assert manifest[(4, 0, 1)] != manifest[(3, 0, 1)]  # another seed, another split
    assert batch[(4, 0, 1)] != batch[(3, 0, 1)]
    fingerprints = {(tmp_path / str(k) / "data_fingerprint.json").read_text() for k in runs}
    assert len(fingerprints) == 1  # the same data, whatever the split


def test_wandb_goes_offline_with_stdin_closed(tmp_path: Path) -> None:
    result = subprocess.run(
        command(tmp_path, *WANDB), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        env=no_credentials(tmp_path), timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "logging offline" in output and "wandb sync" in output
    assert list(tmp_path.glob("*/wandb/offline-run-*"))


def test_wandb_run_resumes_in_its_own_directory(tmp_path: Path) -> None:
    """A second fit of the same run must neither abort on the saved config nor start over."""
    root, home = tmp_path / "runs", tmp_path / "home"
    first = command(
        root, *WANDB, "--run.name=w", "--trainer.max_epochs=1", "--model.lr_scheduler=null"
    )
    resume = [sys.executable, "-m", PACKAGE, "fit", f"--config={root / 'w' / 'config.yaml'}"]
    resume += ["--ckpt_path=last", "--trainer.max_epochs=2"]
    for step in (first, resume):
        result = subprocess.run(
            step, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            env=no_credentials(home), timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    assert "Restored all states" in result.stdout + result.stderr
    assert [p.name for p in root.iterdir()] == ["w"]
    runs = sorted((root / "w" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({run.name.split("-", 3)[-1] for run in runs}) == 1  # one W&B id


def read_terminal(controller: int, process: subprocess.Popen, timeout: float) -> str:
    """Everything the process wrote to its terminal, until it exits; fail if it hangs."""
    output, deadline = b"", time.monotonic() + timeout
    while True:
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"still running after {timeout} s; last output: {output[-2000:]!r}")
        if select.select([controller], [], [], 0.2)[0]:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # every writer closed the terminal
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    process.wait()
    return output.decode(errors="replace")


def test_wandb_never_prompts_in_a_terminal(tmp_path: Path) -> None:
    """In a terminal wandb would ask which account to use; the run must not wait for an answer."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        command(tmp_path, *WANDB), stdin=terminal, stdout=terminal, stderr=terminal,
        env=no_credentials(tmp_path), close_fds=True,
    )  # fmt: skip
    os.close(terminal)
    text = read_terminal(controller, process, timeout=300)
    os.close(controller)
    assert process.returncode == 0, text[-3000:]
    assert "logging offline" in text
    assert "Enter your choice" not in text


def test_the_startup_benchmark_prints_each_command_beside_the_import(
    monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path
) -> None:
    """The script's own loop and table, on its two quickest commands against ``python``
    doing nothing (the full list would import the stack a dozen times in the suite)."""
    spec = importlib.util.spec_from_file_location("startup", PROJECT / "benchmarks" / "startup.py")
    startup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(startup)
    listed = startup.commands(tmp_path)
    assert {"--help", "fit --help", "validate (1 batch)"} <= set(listed)
    assert f"--ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}" in listed["validate (1 batch)"]
    quick = {"import torch, lightning": [sys.executable, "-c", "pass"]} | {
        name: listed[name] for name in ("--help", "sweep --help")
    }
    monkeypatch.setattr(startup, "commands", lambda run: quick)
    monkeypatch.setattr(sys, "argv", ["startup.py", "--repeats=2"])
    startup.main()
    table = capsys.readouterr().out
    for name in quick:
        assert re.search(rf"^{re.escape(name)} +\d+\.\d\d +\d+\.\d\d$", table, re.M), table
    assert re.search(r"^import torch, lightning +\d+\.\d\d +1\.00$", table, re.M), table
