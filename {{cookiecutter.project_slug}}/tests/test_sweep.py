"""``sweep``: trials as fits in their own processes, pruned, resumable, reproducible."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from .conftest import CONFIG, PACKAGE, PROJECT, TRAINERS, cli_main, run

sweep = pytest.importorskip(f"{PACKAGE}.experiments.sweep")
space = pytest.importorskip(f"{PACKAGE}.experiments.space")

GOOD, HOPELESS = 0.003, 1e-7
TINY = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.limit_train_batches=4",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.logger=false",
    "--data.init_args.profile=false",
]


def write_space(path: Path) -> Path:
    lr = {"type": "categorical", "choices": [GOOD, HOPELESS]}
    smoothing = {"type": "float", "low": 0.0, "high": 0.1}
    path.write_text(yaml.safe_dump({"model.lr": lr, "model.label_smoothing": smoothing}))
    return path


def sweep_command(root: Path, name: str, *options: str) -> list[str]:
    command = [sys.executable, "-m", PACKAGE, "sweep", f"--config={CONFIG}", *TINY]
    return [*command, f"--run.root={root}", f"--run.name={name}", *options]


def study_of(sweep_dir: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep_dir / "journal.log"))
    )
    return optuna.load_study(study_name=sweep_dir.name, storage=storage)


def sweep_run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=PROJECT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six trials, two at a time, the hopeless learning rate planted in three of them."""
    root = tmp_path_factory.mktemp("sweeps")
    sweep_dir = root / "planted"
    sweep_dir.mkdir()
    study = optuna.create_study(
        study_name="planted",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(sweep_dir / "journal.log"))
        ),
    )
    for lr in (GOOD, GOOD, HOPELESS, GOOD, HOPELESS, HOPELESS):  # asked in this order
        study.enqueue_trial({"model.lr": lr, "model.label_smoothing": 0.05})
    spec = write_space(root / "space.yaml")
    options = ["--trials=6", "--workers=2", f"--space={spec}", "--trainer.max_epochs=3"]
    sweep_run(sweep_command(root, "planted", *options))
    return sweep_dir


def test_the_shipped_space_samples_options_fit_accepts(tmp_path: Path, capsys) -> None:
    shipped = space.read_space(PROJECT / "configs" / "sweep" / "space.yaml")
    assert "model.lr" in shipped and shipped["model.lr"].log
    middle = {
        key: d.choices[-1] if isinstance(d, CategoricalDistribution) else (d.low + d.high) / 2
        for key, d in shipped.items()
    }
    with pytest.raises(SystemExit) as printed:
        run("fit", tmp_path, *space.overrides(middle), "--print_config")
    assert printed.value.code == 0
    resolved = capsys.readouterr().out
    assert f"lr: {middle['model.lr']}" in resolved


def test_a_space_reads_short_floats_and_names_a_bad_entry(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("model.lr: {type: float, low: 1e-4, high: 1e-2, log: true}\n")
    assert space.read_space(path)["model.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    path.write_text("model.lr: {type: loguniform, low: 1, high: 2}\n")
    with pytest.raises(space.SpaceError, match=r"space.yaml: model.lr: unknown type"):
        space.read_space(path)
    path.write_text("model.lr: {type: float, low: 1}\n")
    with pytest.raises(space.SpaceError, match=r"model.lr: type float needs 'high'"):
        space.read_space(path)


def test_the_lr_range_can_centre_on_the_lr_finder(tmp_path: Path) -> None:
    finder = tmp_path / "lr_finder.json"
    finder.write_text(json.dumps({"suggestion": 0.002}))
    centred = space.centred_on_lr_finder({"model.lr": FloatDistribution(1, 2)}, finder)
    assert centred["model.lr"] == FloatDistribution(0.0002, 0.02, log=True)


def test_a_sweep_prunes_the_hopeless_and_reports_every_trial(searched: Path) -> None:
    rows = list(csv.DictReader((searched / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == list(range(6))
    states = {int(r["number"]): r["state"] for r in rows}
    assert all(states[n] == "PRUNED" for n in (2, 4, 5)), states  # each met a better trial
    assert all(r["state"] in ("COMPLETE", "PRUNED") for r in rows)
    best = min((r for r in rows if r["state"] == "COMPLETE"), key=lambda r: float(r["value"]))
    assert float(best["model.lr"]) == GOOD
    # Chosen on validation: no trial, finished or pruned, touches the test split.
    assert not list(searched.glob("trials/*/test_metrics.json"))
    assert list(searched.glob("trials/*/checkpoints/best-*.ckpt"))
    assert (searched / "plots" / "optimization_history.png").is_file()


def test_best_yaml_trains_to_the_best_trials_metric(searched: Path, tmp_path: Path) -> None:
    best = study_of(searched).best_trial
    options = [f"--config={searched / 'best.yaml'}", f"--run.root={tmp_path}"]
    cli = cli_main(["fit", *options, "--trainer.enable_progress_bar=false"])
    assert cli.run_dir.parent == tmp_path  # a new run, not the trial's directory
    score = float(cli.trainer.checkpoint_callback.best_model_score)
    assert score == pytest.approx(best.value, rel=1e-4)


def test_a_stopped_sweep_resumes_its_trial_and_repeats_none(tmp_path: Path) -> None:
    spec = write_space(tmp_path / "space.yaml")
    options = ["--trials=2", f"--space={spec}", "--pruner=none", "--trainer.max_epochs=6"]
    command = sweep_command(tmp_path, "stopped", *options)
    sweep_dir = tmp_path / "stopped"
    process = subprocess.Popen(command, cwd=PROJECT, stdout=subprocess.PIPE, text=True)
    last = sweep_dir / "trials" / "1" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == 128 + signal.SIGTERM
    interrupted = study_of(sweep_dir).trials
    assert [t.state for t in interrupted] == [TrialState.COMPLETE, TrialState.RUNNING]
    sweep_run(command)
    trials = study_of(sweep_dir).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert trials[1].params == interrupted[1].params
    log = (sweep_dir / "logs" / "trial-1.log").read_text()
    assert "Restoring states from the checkpoint path" in log


def test_a_distributed_trial_samples_once(tmp_path: Path) -> None:
    spec = write_space(tmp_path / "space.yaml")
    ddp = [f"--trainer={TRAINERS / 'ddp_cpu.yaml'}", "--trainer.max_epochs=2"]
    sweep_run(sweep_command(tmp_path, "ddp", "--trials=1", f"--space={spec}", *ddp))
    (trial,) = study_of(tmp_path / "ddp").trials
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2]  # rank 0 alone reports, once an epoch
    assert json.loads((tmp_path / "ddp" / "sweep.json").read_text())["forwarded"][-2:] == ddp


def test_a_cv_objective_scores_a_trial_by_its_folds_mean(tmp_path: Path) -> None:
    spec = write_space(tmp_path / "space.yaml")
    options = ["--objective=cv", "--folds=2", "--trials=1", f"--space={spec}"]
    sweep_run(sweep_command(tmp_path, "cv", *options, "--trainer.max_epochs=1"))
    (trial,) = study_of(tmp_path / "cv").trials
    scores = json.loads((tmp_path / "cv" / "trials" / "0" / "cv_metrics.json").read_text())
    assert trial.state == TrialState.COMPLETE and len(scores["val/loss"]["folds"]) == 2
    assert trial.value == pytest.approx(scores["val/loss"]["mean"])
    best = yaml.safe_load((tmp_path / "cv" / "best.yaml").read_text())
    assert best["data"]["init_args"]["folds"] is None  # a plain fit of the best values


def test_two_processes_share_one_study_and_run_each_trial_once(tmp_path: Path) -> None:
    """What SLURM array tasks do: each a sweep of the same name, joining the journal."""
    spec = write_space(tmp_path / "space.yaml")
    options = ["--trials=3", f"--space={spec}", "--pruner=none", "--trainer.max_epochs=1"]
    seeds = ("--seed=1", "--seed=2")
    started = [
        subprocess.Popen(sweep_command(tmp_path, "shared", *options, seed), cwd=PROJECT)
        for seed in seeds
    ]
    assert [process.wait(timeout=600) for process in started] == [0, 0]
    trials = study_of(tmp_path / "shared").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3  # three in all, not six
    runs = sorted(p.name for p in (tmp_path / "shared" / "trials").iterdir())
    assert runs == ["0", "1", "2"]


def test_the_slurm_sweep_script_starts_a_worker_per_array_task(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    srun = tmp_path / "srun"  # records the command it would start
    srun.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > {tmp_path / 'command'}\n")
    srun.chmod(0o755)
    job = {"SLURM_ARRAY_JOB_ID": "88", "SLURM_ARRAY_TASK_ID": "3"}
    env = os.environ | job | {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    script = PROJECT / "slurm" / "sweep.sbatch"
    subprocess.run(["bash", script, "--trials=64"], cwd=PROJECT, env=env, check=True)
    command = (tmp_path / "command").read_text().split("\0")[:-1]
    assert command[:4] == ["python", "-m", PACKAGE, "sweep"]
    args, forwarded = sweep.sweep_parser("sweep").parse_known_args(command[4:])
    assert (args.name, args.seed, args.trials, args.workers) == ("sweep-88", 45, 64, 1)
    monkeypatch.chdir(PROJECT)  # what each trial's fit is given must parse
    with pytest.raises(SystemExit) as printed:
        cli_main(["fit", *(f"--config={c}" for c in args.config), *forwarded, "--print_config"])
    assert printed.value.code == 0
    assert "accelerator: gpu" in capsys.readouterr().out


def test_a_missing_extra_is_named_before_anything_runs(monkeypatch, capsys) -> None:
    from importlib import util

    from {{ cookiecutter.package_name }} import experiments

    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name: None if name == "cleanlab" else real(name))
    assert experiments.run("cv", "prog cv", ["--folds=2"]) == 2
    assert "pip install -e '.[experiments]'" in capsys.readouterr().err


def test_confirming_seeds_train_the_top_trial_again_and_rank_by_the_mean(tmp_path: Path) -> None:
    spec = write_space(tmp_path / "space.yaml")
    options = ["--trials=2", f"--space={spec}", "--pruner=none", "--trainer.max_epochs=1"]
    confirm = ["--confirm_seeds=1", "--confirm_top=1"]
    sweep_run(sweep_command(tmp_path, "confirmed", *options, *confirm))
    trials = study_of(tmp_path / "confirmed").trials
    (confirming,) = [t for t in trials if "confirms" in t.user_attrs]
    assert len(trials) == 3 and confirming.state == TrialState.COMPLETE
    original = trials[confirming.user_attrs["confirms"]]
    assert confirming.params == original.params

    def seed(trial: optuna.trial.FrozenTrial) -> int:
        config = tmp_path / "confirmed" / "trials" / str(trial.number) / "config.yaml"
        return yaml.safe_load(config.read_text())["seed_everything"]

    assert seed(confirming) == seed(original) + 1
    (row,) = csv.DictReader((tmp_path / "confirmed" / "confirmations.csv").open())
    assert float(row["mean"]) == pytest.approx((original.value + confirming.value) / 2)


def test_a_sweep_run_again_with_other_settings_is_refused(tmp_path: Path, capsys) -> None:
    spec = write_space(tmp_path / "space.yaml")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "sweep.json").write_text(json.dumps({"metric": "val/acc"}))
    args = [f"--run.root={tmp_path}", "--run.name=mine", f"--space={spec}"]
    assert sweep.main("sweep", args) == 2
    assert "is a sweep with other" in capsys.readouterr().err
