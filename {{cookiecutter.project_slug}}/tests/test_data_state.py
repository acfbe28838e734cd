"""The data state a checkpoint carries: later commands test on the split it was trained on,
or refuse, and say when the checkpoint's model settings replace the config's."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from {{ cookiecutter.package_name }}.cli import cli_main, main
from {{ cookiecutter.package_name }}.data.base import STATE_VERSION
from {{ cookiecutter.package_name }}.data.findings import DataError, Finding, raise_on_failures

from .conftest import NO_LOGGER, QUICK, datamodule_class, run


def best_checkpoint(fitted) -> str:
    return fitted.trainer.checkpoint_callback.best_model_path


def test_every_checkpoint_records_the_split_it_was_trained_on(fitted) -> None:
    checkpoint = torch.load(best_checkpoint(fitted), map_location="cpu", weights_only=False)
    state = checkpoint[type(fitted.datamodule).__qualname__]
    assert state["version"] == STATE_VERSION
    split = state["split"]
    assert split["settings"]["seed"] == 42
    assert split["fingerprint"] == fitted.datamodule.prepared.fingerprint
    data = fitted.datamodule.prepared
    assert split["samples"] == {s: data.splits.count(s) for s in ("train", "val", "test")}
    assert len(split["manifest"]) == 64  # a SHA-256 of every sample's split


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("--seed_everything=7", "seed_everything 42 -> 7"),
        ("--data.init_args.val_fraction=0.2", "data.init_args.val_fraction 0.15 -> 0.2"),
    ],
)
@pytest.mark.parametrize("subcommand", ["test", "validate"])
def test_evaluation_on_another_split_is_refused(
    fitted, tmp_path: Path, subcommand: str, override: str, named: str
) -> None:
    """Seed 7 on a seed-42 checkpoint put 177 of 270 training samples into the test split."""
    with pytest.raises(DataError, match=rf"another split.*{named}.*training samples"):
        run(subcommand, tmp_path, *NO_LOGGER, f"--ckpt_path={best_checkpoint(fitted)}", override)


def test_evaluation_with_the_runs_own_settings_reads_its_split(fitted, tmp_path: Path) -> None:
    cli = run("test", tmp_path, *NO_LOGGER, f"--ckpt_path={best_checkpoint(fitted)}")
    assert cli.datamodule.prepared.splits == fitted.datamodule.prepared.splits


def test_prediction_of_new_inputs_ignores_the_split(fitted) -> None:
    """``predict`` on new inputs reads no split, so a changed seed changes nothing there."""
    module = datamodule_class()(seed=7, fitted_from=Path(best_checkpoint(fitted)))
    assert module.class_names == fitted.datamodule.class_names
    assert "prepared" not in module.__dict__  # the state came from the checkpoint alone


def test_resuming_on_another_split_is_refused(tmp_path: Path) -> None:
    """A resumed fit on another split would validate on samples it had trained on."""
    first = run("fit", tmp_path, *NO_LOGGER, "--run.name=split", "--trainer.max_epochs=1")
    resume = [
        "fit",
        f"--config={first.run_dir / 'config.yaml'}",
        "--ckpt_path=last",
        "--trainer.max_epochs=2",
        "--seed_everything=3",
        "--trainer.enable_progress_bar=false",
    ]
    with pytest.raises(DataError, match=r"another split.*seed_everything 42 -> 3"):
        cli_main(resume)


def test_a_checkpoint_without_a_split_record_is_evaluated_with_a_warning(
    fitted, tmp_path: Path
) -> None:
    checkpoint = torch.load(best_checkpoint(fitted), map_location="cpu", weights_only=False)
    key = type(fitted.datamodule).__qualname__
    checkpoint[key] = {k: v for k, v in checkpoint[key].items() if k not in ("split", "version")}
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    with pytest.warns(UserWarning, match="records no split"):
        run("test", tmp_path / "runs", *NO_LOGGER, f"--ckpt_path={old}")


def test_model_settings_replaced_by_the_checkpoints_are_named(
    fitted, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The weights need the checkpoint's network; the config's other answer is not silent."""
    changed = "--model.label_smoothing=0.3"
    run("test", tmp_path, *NO_LOGGER, f"--ckpt_path={best_checkpoint(fitted)}", changed)
    assert "the checkpoint's model settings" in caplog.text
    assert "model.label_smoothing 0.3 -> 0.05" in caplog.text


def test_the_same_model_settings_print_no_notice(fitted, caplog: pytest.LogCaptureFixture) -> None:
    cli_main(["test", f"--config={fitted.run_dir / 'config.yaml'}", *QUICK, *NO_LOGGER,
              f"--ckpt_path={best_checkpoint(fitted)}"])  # fmt: skip
    assert "Run directory" in caplog.text  # the CLI's notices are captured here
    assert "the checkpoint's model settings" not in caplog.text


def test_a_refusal_is_its_message_alone(
    fitted, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    command = ["test", f"--config={fitted.run_dir / 'config.yaml'}", *QUICK, *NO_LOGGER,
               f"--ckpt_path={best_checkpoint(fitted)}", "--seed_everything=7"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["prog", *command])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "seed_everything 42 -> 7" in err


def test_a_finding_that_stops_the_run_is_an_error_and_names_the_rules_command(
    capsys: pytest.CaptureFixture,
) -> None:
    finding = Finding("duplicate_across_splits", "warning", "x", "in train and test", action="fail")
    assert finding.severity == "error"
    with pytest.raises(DataError, match="change the rule") as refused:
        raise_on_failures([finding], datamodule_class())
    path = re.search(r"fit --data\.help (\S+)`", str(refused.value)).group(1)
    with pytest.raises(SystemExit):
        cli_main(["fit", "--data.help", path])  # the command the refusal names
    assert "--data.rules.duplicate_across_splits {" in capsys.readouterr().out
