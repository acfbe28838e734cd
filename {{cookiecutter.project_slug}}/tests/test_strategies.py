"""Trainer profiles: every profile with every shipped config, checked up front; FSDP's units."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.strategies import FSDPStrategy, SingleDeviceStrategy, Strategy

from {{ cookiecutter.package_name }} import strategies
from {{ cookiecutter.package_name }}.cli import cli_main

from .conftest import (
    CONFIG,
    NO_LOGGER,
    PACKAGE,
    PROJECT,
    QUICK,
    TRAINERS,
    in_fresh_process,
    newest_output,
    run,
)

PROFILES = sorted(p.stem for p in TRAINERS.glob("*.yaml"))
GPU_PROFILES = {"gpu", "ddp", "fsdp", "deepspeed"}
# The default config alone, and with each config that layers on top of it.
LAYERS = sorted(p for p in (PROJECT / "configs").glob("*.yaml") if p != CONFIG)
CONFIGS = [[CONFIG]] + [[CONFIG, layer] for layer in LAYERS]


def parsed_trainer(capsys: pytest.CaptureFixture, configs: list[Path], profile: str):
    arguments = [f"--config={path}" for path in configs] + [f"--trainer={TRAINERS}/{profile}.yaml"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *arguments, "--print_config"])
    assert exit_info.value.code in (None, 0), capsys.readouterr().err[-2000:]
    return Namespace(**yaml.safe_load(capsys.readouterr().out)["trainer"])


@pytest.mark.parametrize("configs", CONFIGS, ids=lambda c: "+".join(p.stem for p in c))
@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_with_every_config(capsys, configs: list[Path], profile: str) -> None:
    """Runs on a machine with GPUs (and DeepSpeed); refused with advice on one without."""
    trainer = parsed_trainer(capsys, configs, profile)
    assert strategies.problems(trainer, gpus=2, installed=lambda module: True) == []
    without_gpu = strategies.problems(trainer, gpus=0, installed=lambda module: True)
    if profile in GPU_PROFILES:
        assert len(without_gpu) == 1 and "configs/trainer/cpu.yaml" in without_gpu[0]
    else:
        assert without_gpu == []


def test_deepspeed_needs_its_extra_and_norm_clipping(capsys) -> None:
    trainer = parsed_trainer(capsys, [CONFIG], "deepspeed")
    assert trainer.strategy == "deepspeed_stage_2" and trainer.gradient_clip_val == 1.0
    found = strategies.problems(trainer, gpus=1, installed=lambda module: module != "deepspeed")
    assert found == [
        "DeepSpeed is an optional extra and is not installed here: pip install -e '.[deepspeed]'."
    ]
    trainer.gradient_clip_algorithm = "value"
    found = strategies.problems(trainer, gpus=1, installed=lambda module: True)
    assert len(found) == 1 and "norm only" in found[0]


def test_sharded_strategies_on_the_cpu_are_refused(capsys) -> None:
    for profile in ("fsdp", "deepspeed"):
        trainer = parsed_trainer(capsys, [CONFIG], profile)
        trainer.accelerator = "cpu"
        (found,) = strategies.problems(trainer, gpus=2, installed=lambda module: True)
        assert "no CPU backend" in found and "ddp_cpu.yaml" in found


def test_a_misspelt_strategy_is_refused(capsys) -> None:
    trainer = parsed_trainer(capsys, [CONFIG], "ddp")
    trainer.strategy = "dpp"
    (found,) = strategies.problems(trainer, gpus=2)
    assert found.startswith("Unknown strategy 'dpp'") and "ddp" in found


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without GPU")
def test_gpu_profile_on_a_cpu_machine_stops_before_reading_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a CUDA GPU and this machine has none"):
        run("fit", tmp_path, f"--trainer={TRAINERS / 'fsdp.yaml'}")
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("profile", ["fsdp", "deepspeed"])
def test_sharded_training_then_test_and_predict(tmp_path: Path, profile: str) -> None:
    """On every GPU of the machine; DeepSpeed saves a folder, which test and predict read."""
    if profile == "deepspeed":
        pytest.importorskip("deepspeed")
    placement = ("--trainer.accelerator", "--trainer.devices", "--trainer.strategy")
    short = [argument for argument in QUICK if argument.split("=")[0] not in placement]
    trainer = f"--trainer={TRAINERS / f'{profile}.yaml'}"
    fit = in_fresh_process(
        "fit", CONFIG, trainer, *short, *NO_LOGGER, f"--run.root={tmp_path}", "--run.name=s"
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    run_dir, checkpoint = tmp_path / "s", tmp_path / "s" / "checkpoints" / "last.ckpt"
    assert json.loads((run_dir / "test_metrics.json").read_text())["test/acc"] > 0
    for subcommand in ("test", "predict"):
        result = in_fresh_process(
            subcommand, run_dir / "config.yaml", trainer, f"--ckpt_path={checkpoint}"
        )
        assert result.returncode == 0, result.stderr[-3000:]
    predicted = newest_output(run_dir, "predictions.csv").parent
    assert [p.name for p in predicted.glob("predictions*")] == ["predictions.csv"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fsdp_logs_whole_gradient_norms_and_stops_every_rank_on_a_nan(tmp_path: Path) -> None:
    """The first step's global gradient norm under FSDP on one GPU is the plain single-device
    run's (same seed, same first batch); on every GPU of the machine, a NaN planted in the
    last rank's gradients stops every rank with one message naming the layer."""
    placement = ("--trainer.accelerator", "--trainer.devices", "--trainer.strategy")
    short = [argument for argument in QUICK if argument.split("=")[0] not in placement]
    csv_logger = f"--trainer.logger={PROJECT / 'configs' / 'logger' / 'csv.yaml'}"

    def fit(profile: str, *args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", PACKAGE, "fit", f"--config={CONFIG}", *short]
        command += [f"--trainer={TRAINERS / f'{profile}.yaml'}", f"--run.root={tmp_path}", *args]
        return subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=600)

    def first_norm(name: str) -> float:
        (metrics,) = (tmp_path / name / "csv").glob("*/metrics.csv")
        rows = [r for r in csv.DictReader(metrics.open()) if r.get("grad_norm/global")]
        return float(rows[0]["grad_norm/global"])

    for profile in ("gpu", "fsdp"):
        result = fit(profile, csv_logger, f"--run.name={profile}", "--trainer.devices=1")
        assert result.returncode == 0, result.stderr[-3000:]
    assert first_norm("fsdp") == pytest.approx(first_norm("gpu"), rel=2e-2)  # bf16 autocast
    ranks = torch.cuda.device_count()
    planted = ["--trainer.callbacks+=tests.probe.PlantNaN", f"--trainer.callbacks.rank={ranks - 1}"]
    result = fit("fsdp", *NO_LOGGER, "--run.name=nan", "--trainer.log_every_n_steps=4", *planted)
    assert result.returncode != 0
    stops = re.findall(r"Non-finite gradient in '([^']+)' at step 3 ", result.stderr)
    assert len(stops) == ranks and len(set(stops)) == 1, result.stderr[-3000:]
    assert "_fsdp_wrapped_module" not in stops[0]


def fsdp_units(network: torch.nn.Module) -> list[str]:
    """The modules the shipped FSDP profile makes into units of their own, root excluded."""
    profile = yaml.safe_load((TRAINERS / "fsdp.yaml").read_text())
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    config = parser.parse_object({"strategy": profile["strategy"]})
    strategy = parser.instantiate_classes(config).strategy
    policy = strategy.kwargs["auto_wrap_policy"]
    # FSDP calls this to decide its units; running it needs no GPU and no process group.
    targets = policy._run_policy(network, ignored_modules=set(), root_kwargs={})
    return sorted(type(module).__name__ for module in targets if module is not network)


def test_fsdp_shards_the_resnet_block_by_block() -> None:
    resnet = pytest.importorskip("{{ cookiecutter.package_name }}.networks.resnet")
    assert fsdp_units(resnet.ResNet([3, 32, 32], 10, depth=18)) == ["BasicBlock"] * 8
    assert fsdp_units(resnet.ResNet([3, 32, 32], 10, depth=50)) == ["Bottleneck"] * 16


@pytest.mark.parametrize(
    ("module", "name", "shape"), [("cnn", "SmallCNN", [1, 8, 8]), ("mlp", "MLP", [30])]
)
def test_fsdp_keeps_a_small_network_whole(module: str, name: str, shape: list[int]) -> None:
    """Networks without residual blocks stay one unit (the task's own; the other is pruned)."""
    networks = pytest.importorskip(f"{{ cookiecutter.package_name }}.networks.{module}")
    assert fsdp_units(getattr(networks, name)(shape, 10)) == []


def test_after_fsdp_the_best_checkpoint_loads_into_a_fresh_copy(fitted) -> None:
    trained, best = fitted.model, fitted.trainer.checkpoint_callback.best_model_path
    fresh = strategies.ready_to_restore(trained, FSDPStrategy(), best)
    assert type(fresh) is type(trained) and fresh.network is not trained.network
    saved = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in fresh.state_dict().items())
    assert strategies.ready_to_restore(trained, SingleDeviceStrategy("cpu"), best) is trained


def test_the_slurm_script_launches_a_valid_multi_node_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    srun = tmp_path / "srun"  # records the command it would start on every task
    srun.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > {tmp_path / 'command'}\n")
    srun.chmod(0o755)
    job = {"SLURM_JOB_ID": "77", "SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS_PER_NODE": "4"}
    env = os.environ | job | {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    script = PROJECT / "slurm" / "train.sbatch"
    subprocess.run(["bash", script, "--trainer.max_epochs=3"], cwd=PROJECT, env=env, check=True)
    command = (tmp_path / "command").read_text().split("\0")[:-1]
    assert command[:4] == ["python", "-m", "{{ cookiecutter.package_name }}", "fit"]
    monkeypatch.chdir(PROJECT)  # the script's config paths are relative to the project
    with pytest.raises(SystemExit):
        cli_main([*command[3:], "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    trainer = Namespace(**config["trainer"])
    assert (trainer.num_nodes, str(trainer.devices), trainer.strategy) == (2, "4", "ddp")
    assert trainer.max_epochs == 3 and config["run"]["name"] == "slurm-77"
    assert strategies.problems(trainer, gpus=4) == []
