"""The command line: shipped configs, run directories, loggers, resuming and bad input."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from {{ cookiecutter.package_name }} import rundir
from {{ cookiecutter.package_name }}.cli import cli_main
from {{ cookiecutter.package_name }}.commands import EXPERIMENT_HELP, SUBCOMMAND_HELP

from .conftest import CONFIG, LOGGERS, NO_LOGGER, TRAINERS, logged, newest_output, run

CPU_TRAINERS = ["cpu.yaml"]
GPU_TRAINERS = ["gpu.yaml", "ddp.yaml", "fsdp.yaml", "deepspeed.yaml"]


def print_config(capsys: pytest.CaptureFixture, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", f"--config={CONFIG}", *args, "--print_config"])
    assert exit_info.value.code in (None, 0)
    return yaml.safe_load(capsys.readouterr().out)


def test_one_seed_drives_the_split(tmp_path: Path) -> None:
    cli = run("fit", tmp_path, *NO_LOGGER, "--seed_everything=7", "--trainer.fast_dev_run=1")
    assert cli.datamodule.seed == 7  # linked from seed_everything, never typed twice


def test_print_config_resolves_the_default(capsys) -> None:
    config = print_config(capsys)
    assert config["seed_everything"] == 42
    assert config["model"]["network"]["class_path"].startswith("{{ cookiecutter.package_name }}.networks.")


@pytest.mark.parametrize("trainer", sorted(p.name for p in TRAINERS.glob("*.yaml")))
def test_every_trainer_config_parses(capsys, trainer: str) -> None:
    """GPU-only strategies are checked by the parser alone: no Trainer is built on a CPU."""
    expected = yaml.safe_load((TRAINERS / trainer).read_text())
    config = print_config(capsys, f"--trainer={TRAINERS / trainer}")
    assert config["trainer"]["accelerator"] == expected["accelerator"]
    strategy = config["trainer"]["strategy"]
    if isinstance(expected["strategy"], dict):  # a class: its given arguments must survive
        assert strategy["class_path"] == expected["strategy"]["class_path"]
        for key, value in expected["strategy"]["init_args"].items():
            parsed = strategy["init_args"][key]
            assert sorted(parsed) == sorted(value) if isinstance(value, list) else parsed == value
    else:
        assert strategy == expected["strategy"]


@pytest.mark.parametrize("trainer", CPU_TRAINERS)
def test_fast_dev_run_of_cpu_trainer_configs(tmp_path: Path, trainer: str) -> None:
    cli = run(
        "fit", tmp_path, *NO_LOGGER, f"--trainer={TRAINERS / trainer}", "--trainer.fast_dev_run=1"
    )
    assert cli.trainer.global_step == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_dev_run_on_gpu(tmp_path: Path) -> None:
    cli = run(
        "fit",
        tmp_path,
        *NO_LOGGER,
        f"--trainer={TRAINERS / 'gpu.yaml'}",
        "--trainer.fast_dev_run=1",
    )
    assert cli.trainer.global_step == 1
    assert cli.trainer.strategy.root_device.type == "cuda" and cli.trainer.precision == "bf16-mixed"


def test_run_directory_holds_config_checkpoints_logs_and_reports(fitted) -> None:
    run_dir = fitted.run_dir
    assert run_dir.name == "shared"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["run"]["name"] == "shared"  # re-running the saved config resumes here
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("best-*.ckpt"))) == 1
    assert (run_dir / "csv" / "version_0" / "metrics.csv").is_file()
    hparams = yaml.safe_load((run_dir / "csv" / "version_0" / "hparams.yaml").read_text())
    assert hparams["seed_everything"] == 42  # the resolved config reached the logger
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    assert set(metrics) >= {"test/acc", "test/loss", "test/f1_macro"}
    assert (run_dir / "plots" / "confusion_matrix.png").stat().st_size > 0


@pytest.mark.parametrize(
    "logger, expected",
    [
        ("tensorboard.yaml", "tensorboard/events.out.tfevents.*"),
        ("csv.yaml", "csv/version_0/metrics.csv"),
    ],
)
def test_loggers_write_inside_the_run_directory(tmp_path: Path, logger: str, expected: str) -> None:
    cli = run("fit", tmp_path, f"--trainer.logger={LOGGERS / logger}", "--trainer.max_epochs=1")
    assert list(cli.run_dir.glob(expected))
    assert [p.name for p in tmp_path.iterdir()] == [cli.run_dir.name]  # nothing outside it


def test_without_logger_the_run_still_saves_everything(tmp_path: Path) -> None:
    cli = run("fit", tmp_path, *NO_LOGGER, "--trainer.max_epochs=1")
    assert (cli.run_dir / "config.yaml").is_file()
    assert (cli.run_dir / "checkpoints" / "last.ckpt").is_file()


def test_resume_continues_in_the_same_run_directory(tmp_path: Path) -> None:
    common = [
        "--run.name=resumable",
        "--model.lr_scheduler=null",
        f"--trainer.logger={LOGGERS / 'csv.yaml'}",
    ]
    first = run("fit", tmp_path, *common, "--trainer.max_epochs=1")
    steps = first.trainer.global_step
    saved = first.run_dir / "config.yaml"
    resumed = cli_main(
        [
            "fit",
            f"--config={saved}",
            "--ckpt_path=last",
            "--trainer.max_epochs=2",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert resumed.run_dir == first.run_dir
    assert resumed.trainer.global_step == 2 * steps  # continued, not restarted
    assert len(list(first.run_dir.glob("config.fit-*.yaml"))) == 1
    assert {p.name for p in (first.run_dir / "csv").iterdir()} == {"version_0", "version_1"}
    assert [p.name for p in tmp_path.iterdir()] == ["resumable"]


def test_a_fresh_fit_refuses_to_overwrite_a_run(tmp_path: Path) -> None:
    run("fit", tmp_path, *NO_LOGGER, "--run.name=taken", "--trainer.max_epochs=1")
    with pytest.raises(FileExistsError, match=r"already holds a run.*--ckpt_path last"):
        run("fit", tmp_path, *NO_LOGGER, "--run.name=taken")


def test_evaluation_of_a_checkpoint_writes_into_its_run(fitted, tmp_path: Path) -> None:
    best = fitted.trainer.checkpoint_callback.best_model_path
    for subcommand in ("validate", "test", "predict"):
        cli = run(subcommand, tmp_path, *NO_LOGGER, f"--ckpt_path={best}")
        assert cli.run_dir == fitted.run_dir
    assert len(list(fitted.run_dir.glob("config.test-*.yaml"))) == 1
    assert not list(tmp_path.iterdir())
    rows = list(csv.DictReader(newest_output(fitted.run_dir, "predictions.csv").open()))
    batch_size = fitted.datamodule.predict_dataloader().batch_size
    assert len(rows) == min(2 * batch_size, len(fitted.datamodule.dataset("test")))
    names = fitted.datamodule.class_names
    for row in rows:
        probabilities = [float(row[name]) for name in names]
        assert sum(probabilities) == pytest.approx(1, abs=1e-4)
        assert row["predicted"] == names[probabilities.index(max(probabilities))]


def test_commands_of_the_same_second_get_their_own_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ``test`` runs on one run within a second (scripts do that) keep both configs and
    outputs; the second once failed with FileExistsError."""

    class Frozen:
        @staticmethod
        def now():
            from datetime import datetime

            return datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(rundir, "datetime", Frozen)
    (tmp_path / "config.yaml").write_text("{}")
    names = []
    for _ in range(3):
        names.append(rundir.config_filename(tmp_path, "test"))
        (tmp_path / names[-1]).write_text("{}")
        rundir.outputs_dir(tmp_path, "test").mkdir(parents=True)
    assert names == [
        "config.test-20260102-030405.yaml",
        "config.test-20260102-030405-2.yaml",
        "config.test-20260102-030405-3.yaml",
    ]
    outputs = sorted(p.name for p in (tmp_path / "outputs").iterdir())
    assert outputs == ["test-20260102-030405", "test-20260102-030405-2", "test-20260102-030405-3"]


def test_checkpoint_of_another_model_is_refused(fitted, tmp_path: Path) -> None:
    other = tmp_path / "other.ckpt"
    state = {"state_dict": torch.nn.Linear(3, 2).state_dict(), "pytorch-lightning_version": "2.4.0"}
    torch.save(state, other)
    with pytest.raises(ValueError, match=r"not saved with \w+DataModule.*another model or task"):
        run("test", tmp_path, *NO_LOGGER, f"--ckpt_path={other}")
    # The data state fits, the weights are another network's.
    state[type(fitted.datamodule).__qualname__] = fitted.datamodule.state_dict()
    torch.save(state, other)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"class_weights"):
        run("test", tmp_path, *NO_LOGGER, f"--ckpt_path={other}")


def test_tune_saves_the_lr_finder_plot(tmp_path: Path, capsys) -> None:
    cli = run("tune", tmp_path, *NO_LOGGER, "--num_training=15", "--trainer.limit_train_batches=15")
    assert (cli.run_dir / "plots" / "lr_finder.png").is_file()
    suggested = re.search(r"--model.lr (\S+)\)", capsys.readouterr().out).group(1)
    assert cli.model.lr == float(suggested)  # the finder set the model's learning rate


def test_fit_with_lr_auto_trains_at_the_finders_rate(tmp_path: Path) -> None:
    cli = run("fit", tmp_path, f"--trainer.logger={LOGGERS / 'csv.yaml'}", "--model.lr=auto")
    found = json.loads((cli.run_dir / "lr_finder.json").read_text())["suggestion"]
    assert (cli.run_dir / "plots" / "lr_finder.png").stat().st_size > 0
    assert isinstance(found, float) and found != pytest.approx(3e-3)
    assert cli.model.lr == found
    # OneCycle was built after the finder: its peak is the found rate, and training used it.
    assert cli.trainer.optimizers[0].param_groups[0]["max_lr"] == found
    rates = logged(cli, "lr-AdamW")
    assert max(rates) <= found * (1 + 1e-6) and max(rates) == pytest.approx(found, rel=0.2)
    checkpoint = torch.load(cli.run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["hyper_parameters"]["lr"] == found


def test_lr_auto_without_a_suggestion_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no suggestion.*give a number"):
        run("fit", tmp_path, *NO_LOGGER, "--model.lr=auto", "--trainer.fast_dev_run=1")


def test_profile_writes_the_report_without_training(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    cli = run("profile", tmp_path, *NO_LOGGER)
    report = json.loads((cli.run_dir / "profile.json").read_text())
    assert report["dataset"]["samples"] == len(cli.datamodule.prepared.ids)
    for finding in report["findings"]:
        assert set(finding) >= {"check", "severity", "subject", "message"}
        assert finding["severity"] in {"info", "warning", "error"}
    assert (cli.run_dir / "plots" / "profile_class_balance.png").stat().st_size > 0
    assert (cli.run_dir / "split_manifest.csv").is_file()
    printed = capsys.readouterr().out
    table = printed[printed.index("Data profile (") :]
    assert max(len(line.rstrip()) for line in table.splitlines()) <= 80
    words = " ".join(table.split())  # each message whole, however it wrapped
    assert all(" ".join(f["message"].split()) in words for f in report["findings"])
    assert cli.trainer.global_step == 0 and not (cli.run_dir / "checkpoints").exists()


def test_profile_can_be_switched_off_but_the_manifest_stays(tmp_path: Path) -> None:
    cli = run("fit", tmp_path, *NO_LOGGER, "--data.profile=false", "--trainer.max_epochs=1")
    assert not (cli.run_dir / "profile.json").exists()
    assert (cli.run_dir / "split_manifest.csv").is_file()
    assert (cli.run_dir / "data_fingerprint.json").is_file()


def test_unknown_cleaning_rule_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        run("fit", tmp_path, "--data.rules.class_imbalance=ignore")
    assert "class_imbalance" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_unknown_config_key_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run("fit", tmp_path, "--model.learning_rate=0.1")
    assert exit_info.value.code != 0
    assert "learning_rate" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_random_seed_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        run("fit", tmp_path, "--seed_everything=true")
    assert "seed_everything must be an integer" in capsys.readouterr().err


def test_a_mistyped_option_is_answered_first_with_the_closest_one(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli_main(["fit", f"--config={CONFIG}", "--model.lrr=0.1"])
    assert stopped.value.code == 2
    said = capsys.readouterr().err.splitlines()
    assert said[0].startswith("error: ") and "did you mean --model.lr?" in said[0], said
    assert len(said) == 2 and said[1].endswith(" fit --help"), said


def test_help_lists_each_subcommand_on_one_line_of_its_own(capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    printed = capsys.readouterr().out
    assert "Lightning Trainer command line tool" not in printed
    for subcommand, line in SUBCOMMAND_HELP.items():
        if f"    {subcommand} " in printed:
            assert re.search(rf"^    {subcommand} +{re.escape(line)}$", printed, re.M), printed
    for experiment, line in EXPERIMENT_HELP.items():
        assert re.search(rf"^  {experiment} +{re.escape(line)}$", printed, re.M), printed
