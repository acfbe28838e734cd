"""Faults a run survives: SIGTERM and Ctrl+C mid-epoch, a crash while saving, bad paths."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from .conftest import CONFIG, LOGGERS, NO_LOGGER, PACKAGE, PROJECT, run

# Deterministic and short: two epochs of six batches, the default callbacks, augmentation on.
SHORT = [
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=6",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
KILL_AT = 8  # mid-way through the second epoch


class WaitForSignal(L.Callback):
    """At ``step``, tells the test (a marker file) and waits for its signal to arrive."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        self.marker.touch()
        deadline = time.monotonic() + 60
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.05)  # Ctrl+C raises KeyboardInterrupt out of this sleep


def fit(root: Path, *args: str) -> list[str]:
    command = [sys.executable, "-m", PACKAGE, "fit", f"--config={CONFIG}", f"--run.root={root}"]
    return [*command, *SHORT, *args]


def environment(tmp_path: Path) -> dict[str, str]:
    """Offline W&B, no credentials; the project on the path for the test callback."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return keep | {
        "WANDB_MODE": "offline",
        "NETRC": str(tmp_path / "no-netrc"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
    }


def interrupted(root: Path, env: dict, sig: signal.Signals, *args: str) -> subprocess.Popen:
    """A fit that receives ``sig`` from this process once it reaches step ``KILL_AT``."""
    marker = root / f"at-step-{KILL_AT}"
    waiter = {"step": KILL_AT, "marker": str(marker)}
    callback = json.dumps({"class_path": f"{__name__}.WaitForSignal", "init_args": waiter})
    pipe = subprocess.PIPE
    command = fit(root, "--run.name=cut", f"--trainer.callbacks+={callback}", *args)
    process = subprocess.Popen(
        command, cwd=PROJECT, env=env, stdout=pipe, stderr=pipe, text=True,
        # A shell that started the tests in the background ignores SIGINT, and a child
        # inherits that: Python then never raises KeyboardInterrupt and Ctrl+C does nothing.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(sig)
    return process


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def test_sigterm_mid_epoch_then_resume_ends_as_an_uninterrupted_run(tmp_path: Path) -> None:
    env, wandb = environment(tmp_path), f"--trainer.logger={LOGGERS / 'wandb.yaml'}"
    whole = subprocess.run(
        fit(tmp_path, "--run.name=whole", wandb), cwd=PROJECT, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert whole.returncode == 0, whole.stderr[-3000:]

    process = interrupted(tmp_path, env, signal.SIGTERM, wandb)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]  # not 0: not "finished"
    run_dir = tmp_path / "cut"
    assert f"Stopped by SIGTERM at epoch 1, step {KILL_AT}" in out + err
    pasted = f"python -m {PACKAGE} fit --config {run_dir / 'config.yaml'} --ckpt_path last"
    assert f"Resume with: {pasted}" in out + err  # runs as printed
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == KILL_AT

    resume = [sys.executable, "-m", PACKAGE, "fit", f"--config={run_dir / 'config.yaml'}"]
    resumed = subprocess.run(
        [*resume, "--ckpt_path=last"], cwd=PROJECT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["cut", "whole"]
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    expected = tmp_path / "whole" / "checkpoints" / "last.ckpt"
    assert final["global_step"] == torch.load(expected, weights_only=True)["global_step"]
    # Same batches in the same order, same dropout and augmentation draws: the same weights.
    for name, tensor in weights(expected).items():
        assert torch.equal(final["state_dict"][name], tensor), name
    # Both halves logged to one W&B run.
    runs = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and runs[0].split("-", 3)[-1] == runs[1].split("-", 3)[-1]


def slurm_job(tmp_path: Path, restarts: int) -> dict[str, str]:
    """The environment of a one-task SLURM job, whose ``scontrol`` only logs its arguments."""
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    scontrol = tools / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    job = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1"}
    ranks = {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    env = environment(tmp_path) | job | ranks | {"SLURM_NODELIST": "node1"}
    return env | {"SLURM_RESTART_COUNT": str(restarts), "PATH": f"{tools}:{os.environ['PATH']}"}


def test_slurm_time_limit_requeues_and_the_job_resumes(tmp_path: Path) -> None:
    """SIGUSR1 before the time limit: Lightning saves and requeues; SLURM then kills the
    job, and the same command, started again, resumes the run."""
    process = interrupted(tmp_path, slurm_job(tmp_path, restarts=0), signal.SIGUSR1, *NO_LOGGER)
    log, deadline = tmp_path / "scontrol.log", time.monotonic() + 120

    def requeues() -> list[str]:  # CodeCarbon asks `scontrol show job` too
        lines = log.read_text().splitlines() if log.exists() else []
        return [line for line in lines if line.startswith("requeue")]

    while not requeues() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    process.kill()
    process.communicate(timeout=60)
    assert requeues() == ["requeue 4242"]
    hpc = tmp_path / "cut" / "hpc_ckpt_1.ckpt"
    assert torch.load(hpc, map_location="cpu", weights_only=True)["global_step"] == KILL_AT

    again = subprocess.run(
        fit(tmp_path, "--run.name=cut", *NO_LOGGER), cwd=PROJECT, env=slurm_job(tmp_path, 1),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {hpc}" in again.stdout + again.stderr
    final = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 12  # two epochs of six batches


def test_ctrl_c_mid_epoch_saves_where_the_run_was(tmp_path: Path) -> None:
    process = interrupted(tmp_path, environment(tmp_path), signal.SIGINT, *NO_LOGGER)
    out, err = process.communicate(timeout=300)
    assert process.returncode != 0, err[-3000:]
    assert f"Stopped by Ctrl+C (SIGINT) at epoch 1, step {KILL_AT}" in out + err
    saved = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == KILL_AT


def test_a_crash_while_saving_leaves_the_previous_checkpoint_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = run("fit", tmp_path, *NO_LOGGER, "--trainer.max_epochs=1")
    last = cli.run_dir / "checkpoints" / "last.ckpt"
    before = weights(last)

    def dies_halfway(checkpoint: dict, path: str, storage_options: object = None) -> None:
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(cli.trainer.strategy.checkpoint_io, "save_checkpoint", dies_halfway)
    with pytest.raises(OSError, match="No space left"):
        cli.trainer.save_checkpoint(last)
    after = weights(last)
    assert all(torch.equal(after[name], tensor) for name, tensor in before.items())
    assert not list(last.parent.glob("*.partial"))  # the half-written file is gone


def test_a_run_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match="is a file"):
        run("fit", root, *NO_LOGGER)
    assert root.read_text() == "not a directory"


def test_a_new_run_from_a_saved_config_keeps_out_of_that_run(tmp_path: Path) -> None:
    """A run's config names its folders; a new run from it (retraining a sweep's best
    trial, say) writes its own instead of replacing the first run's checkpoints."""
    first = run("fit", tmp_path, *NO_LOGGER, "--trainer.max_epochs=1")
    saved = {p: p.stat().st_mtime_ns for p in (first.run_dir / "checkpoints").iterdir()}
    again = run(
        "fit", tmp_path, *NO_LOGGER, "--run.name=again", config=first.run_dir / "config.yaml"
    )
    assert again.run_dir == tmp_path / "again"
    assert {p: p.stat().st_mtime_ns for p in (first.run_dir / "checkpoints").iterdir()} == saved
    assert list((again.run_dir / "checkpoints").glob("best-*.ckpt"))
    assert (again.run_dir / "test_metrics.json").is_file()


@pytest.mark.parametrize("schedule", ["OneCycle", "WarmupCosine"])
def test_resuming_past_the_end_of_the_schedule_is_refused(tmp_path: Path, schedule: str) -> None:
    """OneCycle would fail at its planned end, WarmupCosine would train on at its least rate."""
    option = f"--model.lr_scheduler={PACKAGE}.schedulers.{schedule}"
    cli = run("fit", tmp_path, *NO_LOGGER, option, "--trainer.max_epochs=1")
    last = cli.run_dir / "checkpoints" / "last.ckpt"
    resume = [*NO_LOGGER, option, f"--ckpt_path={last}"]
    with pytest.raises(ValueError, match=r"planned for 4 optimizer steps, .* asks for 8"):
        run("fit", tmp_path, *resume, "--trainer.max_epochs=2")
    assert torch.load(last, weights_only=True)["global_step"] == 4  # the run is as it was
    same = run("fit", tmp_path, *resume, "--trainer.max_epochs=1")
    assert same.trainer.global_step == 4  # its own length still resumes (here: nothing left)


def test_unfinished_checkpoint_writes_are_removed_at_the_next_fit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A SIGKILL mid-save leaves ``<name>.partial``, a checkpoint's size, behind."""
    cli = run("fit", tmp_path, *NO_LOGGER, "--trainer.max_epochs=1")
    left = [
        cli.run_dir / "checkpoints" / "last.ckpt.partial",
        cli.run_dir / "hpc_ckpt_1.ckpt.partial",
    ]
    for path in left:
        path.write_bytes(b"PK\x03\x04 half a checkpoint")
    with caplog.at_level(logging.INFO):
        run("fit", tmp_path, *NO_LOGGER, "--trainer.max_epochs=1", f"--run.name={cli.run_dir.name}",
            "--ckpt_path=last")  # fmt: skip
    assert not any(path.exists() for path in left)
    assert "Removed 2 unfinished checkpoint write(s) a kill mid-save left" in caplog.text
    assert "checkpoints/last.ckpt.partial, hpc_ckpt_1.ckpt.partial" in caplog.text


def test_a_damaged_checkpoint_is_named_and_the_newest_intact_one_resumed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cli = run("fit", tmp_path, *NO_LOGGER, "--trainer.max_epochs=1")
    checkpoints = cli.run_dir / "checkpoints"
    (best,) = checkpoints.glob("best-*.ckpt")
    last = checkpoints / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy cut short
    again = [*NO_LOGGER, "--trainer.max_epochs=1", f"--run.name={cli.run_dir.name}"]
    with pytest.raises(ValueError, match=rf"{last} is damaged \(truncated .* use {best} instead"):
        run("fit", tmp_path, *again, f"--ckpt_path={last}")
    with pytest.raises(ValueError, match=rf"{last} is damaged"):
        run("test", tmp_path, *again, f"--ckpt_path={last}")
    with caplog.at_level(logging.INFO):
        resumed = run("fit", tmp_path, *again, "--ckpt_path=last")
    assert f"{last} is damaged (truncated or not a checkpoint: " in caplog.text
    assert f"resuming from the newest intact checkpoint, {best}" in caplog.text
    assert resumed.trainer.global_step == 4  # the epoch the intact checkpoint holds
