"""Fast tier: every shipped config of every combination parses through the project's own CLI.

GPU-only trainer profiles (gpu, ddp, fsdp, deepspeed) are validated by the parser with
``--print_config``: no Trainer is built, so they are checked on a CPU-only machine too.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import CHOICES, bake

SNAPSHOTS = Path(__file__).parent / "snapshots"
LOGGER_CLASS = {"wandb": "WandbLogger", "tensorboard": "TensorBoardLogger", "csv": "CSVLogger"}
# Runs in the baked project's interpreter: --print_config for each config, collected as JSON.
DRIVER = """
import contextlib, io, json, sys
from {package}.cli import cli_main
results = {{}}
for name, args in json.loads(sys.argv[1]).items():
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli_main(["fit", "--config=configs/default.yaml", *args, "--print_config"])
        except SystemExit as exit:
            code = exit.code or 0
    results[name] = {{"code": code, "out": out.getvalue(), "err": err.getvalue()}}
print(json.dumps(results))
"""


def print_configs(project: Path, requests: dict[str, list[str]]) -> dict[str, dict]:
    package = next((project / "src").iterdir()).name
    result = subprocess.run(
        [sys.executable, "-c", DRIVER.format(package=package), json.dumps(requests)],
        cwd=project, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(project / "src")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def machine_independent(printed: str) -> str:
    """The printed config without the version banner, which changes with the installed Lightning."""
    return re.sub(r"^# lightning\.pytorch==.*\n", "", printed)


@pytest.mark.parametrize(
    "task, logger, accelerator",
    list(itertools.product(CHOICES["task"], CHOICES["logger"], CHOICES["accelerator"])),
)
def test_every_shipped_config_parses(tmp_path: Path, task: str, logger: str, accelerator: str) -> None:
    project = bake(tmp_path, task=task, logger=logger, accelerator=accelerator, include_ci="no")
    configs = project / "configs"
    requests = {"default": []}
    requests |= {f"trainer/{p.stem}": [f"--trainer={p}"] for p in (configs / "trainer").glob("*.yaml")}
    requests |= {f"logger/{p.stem}": [f"--trainer.logger={p}"] for p in (configs / "logger").glob("*.yaml")}
    results = print_configs(project, requests)

    for name, result in results.items():
        assert result["code"] == 0, f"{name}: {result['err'][-2000:]}"
    parsed = {name: yaml.safe_load(result["out"]) for name, result in results.items()}
    default = parsed["default"]
    assert default["trainer"]["accelerator"] == accelerator
    if logger == "none":
        assert default["trainer"]["logger"] is False
    else:
        assert default["trainer"]["logger"]["class_path"].endswith(LOGGER_CLASS[logger])
    for name, config in parsed.items():
        if name.startswith("trainer/"):
            shipped = yaml.safe_load((configs / f"{name}.yaml").read_text())
            assert config["trainer"]["accelerator"] == shipped["accelerator"], name
        if name.startswith("logger/"):
            assert config["trainer"]["logger"]["class_path"].endswith(LOGGER_CLASS[name[7:]])

    if (logger, accelerator) == ("wandb", "auto"):  # the default answers
        snapshot = SNAPSHOTS / f"{task}.yaml"
        printed = machine_independent(results["default"]["out"])
        if os.environ.get("UPDATE_SNAPSHOTS"):
            snapshot.write_text(printed)
        assert printed == snapshot.read_text(), (
            f"the default config changed: review `git diff {snapshot}` after UPDATE_SNAPSHOTS=1"
        )
