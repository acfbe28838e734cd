"""Fast tier: every shipped config of every combination parses through the project's own CLI.

GPU-only trainer profiles (gpu, ddp, fsdp, deepspeed) are validated by the parser with
``--print_config``: no Trainer is built, so they are checked on a CPU-only machine too.
Importing Lightning costs seconds, so one interpreter checks several bakes; each bake gets its
own package name so they can be imported side by side.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import CHOICES, COMBINATIONS, bake

SNAPSHOTS = Path(__file__).parent / "snapshots"
LOGGER_CLASS = {"wandb": "WandbLogger", "tensorboard": "TensorBoardLogger", "csv": "CSVLogger"}
# Runs in a fresh interpreter: --print_config for each (package, arguments), collected as JSON.
DRIVER = """
import contextlib, importlib, io, json, sys
results = []
for package, args in json.loads(sys.argv[1]):
    cli_main = importlib.import_module(package + ".cli").cli_main
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli_main(["fit", *args, "--print_config"])
        except SystemExit as exit:
            code = exit.code or 0
    results.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
"""
GROUPS = sorted({(c["task"], c["network"]) for c in COMBINATIONS})


def print_configs(projects: list[Path], requests: list[tuple[str, list[str]]]) -> list[dict]:
    paths = os.pathsep.join(str(project / "src") for project in projects)
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(requests)],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "PYTHONPATH": paths},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def machine_independent(printed: str) -> str:
    """The printed config without the version banner, which follows the installed Lightning."""
    return re.sub(r"^# lightning\.pytorch==.*\n", "", printed)


def assert_answers_hold(config: dict, answers: dict) -> None:
    """The accelerator, network and logger answers are the printed config's defaults."""
    auto = "SmallCNN" if answers["task"] == "image_classification" else "MLP"
    names = {"resnet18": "ResNet", "small_cnn": "SmallCNN", "mlp": "MLP"}
    assert config["trainer"]["accelerator"] == answers["accelerator"], answers
    network_class = names.get(answers["network"], auto)
    assert config["model"]["network"]["class_path"].endswith(network_class), answers
    if answers["logger"] == "none":
        assert config["trainer"]["logger"] is False, answers
    else:
        logger_class = LOGGER_CLASS[answers["logger"]]
        assert config["trainer"]["logger"]["class_path"].endswith(logger_class), answers


@pytest.mark.parametrize("task, network", GROUPS)
def test_every_shipped_config_parses(tmp_path: Path, task: str, network: str) -> None:
    """Every logger, accelerator and CI answer for this task and network, in one interpreter
    (building the parser costs seconds; each bake has its own package name to sit side by
    side)."""
    bakes = {}
    for answers in COMBINATIONS:
        if (answers["task"], answers["network"]) == (task, network):
            name = "cfg {logger} {accelerator} {include_ci}".format(**answers)
            project = bake(tmp_path, **answers, project_name=name)
            bakes[project] = (project.name.replace("-", "_"), answers)
    requests = [
        (package, [f"--config={p / 'configs/default.yaml'}"]) for p, (package, _) in bakes.items()
    ]
    # The profiles and logger files are the same in every bake: check them in the first.
    first, (package, _) = next(iter(bakes.items()))
    extra = {
        f"{kind}/{path.stem}": f"--trainer{'.logger' if kind == 'logger' else ''}={path}"
        for kind in ("trainer", "logger")
        for path in sorted((first / "configs" / kind).glob("*.yaml"))
    }
    default = f"--config={first / 'configs/default.yaml'}"
    requests += [(package, [default, argument]) for argument in extra.values()]
    results = print_configs(list(bakes), requests)

    names = [f"{p.name}/default" for p in bakes] + list(extra)
    failed = {name: r["err"][-1500:] for name, r in zip(names, results, strict=True) if r["code"]}
    assert not failed, failed
    printed = [yaml.safe_load(r["out"]) for r in results]
    for config, (_, answers) in zip(printed, bakes.values(), strict=False):
        assert_answers_hold(config, answers)
    for name, config in zip(extra, printed[len(bakes) :], strict=True):
        kind, stem = name.split("/")
        shipped = yaml.safe_load((first / "configs" / kind / f"{stem}.yaml").read_text())
        if kind == "trainer":
            assert config["trainer"]["accelerator"] == shipped["accelerator"], name
        else:
            assert config["trainer"]["logger"]["class_path"] == shipped["class_path"], name


@pytest.mark.parametrize("task", CHOICES["task"])
def test_default_config_snapshot(tmp_path: Path, task: str) -> None:
    """A change to the shipped defaults shows up as a reviewed diff of tests/snapshots/."""
    project = bake(tmp_path, task=task)
    config = f"--config={project / 'configs' / 'default.yaml'}"
    (result,) = print_configs([project], [("my_project", [config])])
    printed = machine_independent(result["out"])
    snapshot = SNAPSHOTS / f"{task}.yaml"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot.write_text(printed)
    assert printed == snapshot.read_text(), (
        f"the defaults changed: review, then UPDATE_SNAPSHOTS=1 ({snapshot})"
    )
