"""DDP with two CPU processes (gloo): what each rank sees, holds and writes, and resuming.

Each process records its view through ``tests/probe.py``; samples are matched by content.
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing

from {{ cookiecutter.package_name }}.callbacks import GradientMonitor
from {{ cookiecutter.package_name }}.cli import cli_main

from .conftest import (
    CONFIG,
    LOGGERS,
    PACKAGE,
    PROJECT,
    TRAINERS,
    datamodule_class,
    default_config,
    newest_output,
)
from .probe import sample_hashes

VAL_FRACTION = 0.155  # an odd number of validation samples in both embedded datasets


def data_options() -> dict:
    """Unaugmented data, so that a sample looks the same in every process."""
    options = {"seed": 42, "val_fraction": VAL_FRACTION}
    if "augment" in inspect.signature(datamodule_class()).parameters:
        options["augment"] = False
    return options


def ddp(*args: str, subcommand: str = "fit", code: int = 0) -> str:
    command = [sys.executable, "-m", PACKAGE, subcommand, *args]
    command.append("--trainer.enable_progress_bar=false")
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert result.returncode == code, result.stderr[-3000:]
    return result.stdout + result.stderr


def events(probe: Path, rank: int, event: str, fn: str = "fit") -> list[dict]:
    lines = (probe / f"rank{rank}.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [r for r in records if r["event"] == event and r["fn"] == fn]


def split_hashes(split: str) -> Counter:
    options = {**data_options(), "num_workers": 0, "profile": False}
    dataset = datamodule_class()(**options).prepared.datasets[split]
    inputs = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(len(dataset))])
    return Counter(sample_hashes(inputs))


TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


@pytest.mark.parametrize(
    "profile, tolerance",
    # The CPU's float32 sums agree to rounding (an accuracy is then exact: one sample is
    # 1/279); bf16 on the GPUs may flip one borderline prediction.
    [("ddp_cpu", 1e-5), pytest.param("ddp", 5e-3, marks=TWO_GPUS)],
)
def test_two_processes_train_as_one(tmp_path: Path, profile: str, tolerance: float) -> None:
    """One epoch with two processes, then the same run resumed for a second epoch.

    A single test: both runs are inputs to every check, and pytest-xdist would otherwise
    repeat them in each of its workers.
    """
    run, probe = tmp_path / "runs" / "ddp", tmp_path / "probe"
    data = [f"--data.init_args.{key}={value}" for key, value in data_options().items()]
    first = ddp(
        f"--config={CONFIG}", f"--trainer={TRAINERS / f'{profile}.yaml'}", "--trainer.devices=2",
        f"--trainer.logger={LOGGERS / 'csv.yaml'}", f"--run.root={run.parent}", "--run.name=ddp",
        "--trainer.max_epochs=1", "--model.lr_scheduler=null", *data,  # OneCycle can't extend
        "--model.decision=f1_macro",  # offsets fitted on every rank's validation logits
        "--trainer.callbacks+=tests.probe.Probe", f"--trainer.callbacks.out={probe}",
    )  # fmt: skip
    assert "MEMBER: 2/2" in first
    check_written_once(run, first)
    resumed = ddp(f"--config={run / 'config.yaml'}", "--ckpt_path=last", "--trainer.max_epochs=2")
    assert "Restored all states" in resumed
    check_step_count_continues(probe)
    check_identical_weights(probe)
    check_disjoint_training_shards(probe)
    check_validation_equals_one_process(probe, run, tolerance)
    last_checkpoint = f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    ddp(f"--config={run / 'config.yaml'}", last_checkpoint, subcommand="predict")
    check_one_prediction_file(run)


def check_written_once(run: Path, output: str) -> None:
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert [f for f in files if f.startswith("config")] == ["config.yaml"]
    assert [f for f in files if f.startswith("provenance")] == ["provenance.json"]
    checkpoints = [f for f in files if f.startswith("checkpoints/")]
    assert len(checkpoints) == 2 and "checkpoints/last.ckpt" in checkpoints
    assert not [f for f in files if f.endswith(".partial")]
    assert {f.split("/")[1] for f in files if f.startswith("csv/")} == {"version_0"}
    assert output.count("Test: ") == 1 and output.count("Attributions (") == 1  # rank 0 alone


def check_step_count_continues(probe: Path) -> None:
    for rank in (0, 1):
        first_end, resumed_end = events(probe, rank, "train_end")
        _, resumed_start = events(probe, rank, "train_start")
        assert resumed_start["step"] == first_end["step"] > 0
        assert resumed_end["step"] == 2 * first_end["step"]


def check_identical_weights(probe: Path) -> None:
    ends = [[end["weights"] for end in events(probe, rank, "train_end")] for rank in (0, 1)]
    assert ends[0] == ends[1] and len(set(ends[0])) == 2  # equal after each run; they trained


def check_disjoint_training_shards(probe: Path) -> None:
    train = split_hashes("train")
    batch = default_config()["data"]["init_args"]["batch_size"]
    expected = train.total() // 2 // batch * batch  # half each; the last partial batch dropped
    for epoch in (0, 1):
        seen = [Counter(events(probe, rank, "train_epoch")[epoch]["samples"]) for rank in (0, 1)]
        assert seen[0].total() == seen[1].total() == expected
        assert (seen[0] + seen[1]) - train == Counter()  # no sample twice, none from elsewhere


def check_validation_equals_one_process(probe: Path, run: Path, tolerance: float) -> None:
    val = split_hashes("val")
    assert val.total() % 2 == 1  # an odd count: padding ranks to equal length would repeat one
    last = [events(probe, rank, "validation")[-1] for rank in (0, 1)]
    assert Counter(last[0]["samples"]) + Counter(last[1]["samples"]) == val
    last_checkpoint = run / "checkpoints" / "last.ckpt"
    cli = cli_main([
        "validate", f"--config={run / 'config.yaml'}", f"--ckpt_path={last_checkpoint}",
        "--trainer.devices=1", "--trainer.strategy=auto", "--trainer.enable_progress_bar=false",
    ])  # fmt: skip
    (single,) = events(probe, 0, "validation", fn="validate")
    assert Counter(single["samples"]) == val
    for distributed in last:
        assert distributed["metrics"] == pytest.approx(single["metrics"], rel=tolerance)
    # The decision offsets two processes fitted (saved in the checkpoint) are those one
    # process fits on the whole validation split with the same weights.
    assert "val/f1_macro_decided" in single["metrics"]
    saved = torch.load(last_checkpoint, weights_only=False)["state_dict"]["decision_offsets"]
    assert torch.allclose(cli.model.decision_offsets, saved, atol=tolerance)


def check_one_prediction_file(run: Path) -> None:
    """Each process predicted a share; one file holds every sample once, in the data's order."""
    options = {**data_options(), "num_workers": 0, "profile": False}
    expected = datamodule_class()(**options).predict_ids
    written = newest_output(run, "predictions.csv")
    rows = list(csv.DictReader(written.read_text().splitlines()))
    assert [row["id"] for row in rows] == expected and len(expected) > 2
    assert not list(written.parent.glob("predictions.rank*"))


def test_a_nan_on_one_rank_stops_every_rank_with_one_message(tmp_path: Path) -> None:
    """The NaN comes at a checking step (every 4th), so only rank 1 sees it there. Without
    agreeing, rank 1 stops and rank 0 waits for it in the next collective until the timeout
    (30 minutes, then this test's 300 s)."""
    output = ddp(
        f"--config={CONFIG}", f"--trainer={TRAINERS / 'ddp_cpu.yaml'}", "--trainer.devices=2",
        f"--run.root={tmp_path}", "--trainer.logger=false", "--trainer.max_epochs=1",
        "--trainer.log_every_n_steps=4", "--data.init_args.profile=false",
        "--trainer.callbacks+=tests.probe.PlantNaN", "--trainer.callbacks.step=3",
        code=1,
    )  # fmt: skip
    assert "planted NaN in" in output and "on rank 1 at step 3" in output
    stops = re.findall(r"Non-finite gradient in '[^']+' at step 3 \(noticed at step 3\)", output)
    assert len(stops) == 2, output[-3000:]  # each rank, the same layer, step and check


def combine_shards(rank: int, port: int, shards: list[torch.Tensor], out: Path) -> None:
    """One rank of the reduction: its shard of every layer's gradient in, the norms out."""
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for norm_type in (2.0, 1.0, float("inf")):
            monitor = GradientMonitor(norm_type=norm_type)
            monitor._sharded = True
            trainer = SimpleNamespace(world_size=2, interrupted=False)
            local = torch.stack([torch.linalg.vector_norm(s, norm_type) for s in shards[rank]])
            agreed = monitor._agreed(trainer, local[None])[0]
            torch.save(agreed, out / f"{norm_type}-{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sharded_gradient_norms_are_the_whole_gradients_norms(tmp_path: Path) -> None:
    """FSDP's case on two gloo processes: each rank holds half of each layer's gradient
    (one rank none of the third layer: a zero, as the monitor reads a missing shard), and
    both log the unsharded norms."""
    torch.manual_seed(0)
    layers = [torch.randn(10), torch.randn(7) * 100, torch.randn(3)]
    halves = [(g[: len(g) // 2], g[len(g) // 2 :]) for g in layers[:2]]
    shards = [[h[rank] for h in [*halves, (torch.zeros(1), layers[2])]] for rank in (0, 1)]
    port = 29500 + os.getpid() % 1000
    torch.multiprocessing.spawn(combine_shards, (port, shards, tmp_path), nprocs=2)
    for norm_type in (2.0, 1.0, float("inf")):
        whole = torch.stack([torch.linalg.vector_norm(g, norm_type) for g in layers])
        for rank in (0, 1):
            agreed = torch.load(tmp_path / f"{norm_type}-{rank}.pt")
            assert torch.allclose(agreed, whole, rtol=1e-6), (norm_type, rank)
