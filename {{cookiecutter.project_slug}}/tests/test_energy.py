"""EnergyMeter: CodeCarbon's offline estimate of each fit, and what it says about itself."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import tempfile
import threading
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from {{ cookiecutter.package_name }}.callbacks import energy

from .conftest import LOGGERS, NO_LOGGER, default_config, logged, run

METER = f"{energy.__name__}.EnergyMeter"
needs_codecarbon = pytest.mark.skipif(
    importlib.util.find_spec("codecarbon") is None, reason='needs pip install -e ".[energy]"'
)


def config_with_meter(tmp_path: Path, **init_args) -> Path:
    """The default config with exactly one EnergyMeter (whether or not it ships one)."""
    config = default_config()
    callbacks = config["trainer"]["callbacks"]
    callbacks[:] = [c for c in callbacks if not c["class_path"].endswith("EnergyMeter")]
    callbacks.append({"class_path": METER, "init_args": init_args})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def energy_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("Energy")]


def codecarbon_timers_left() -> list[threading.Thread]:
    """CodeCarbon's sampling threads still running once they had time to notice a stop."""
    timers = [
        thread
        for thread in threading.enumerate()
        if isinstance(thread, threading.Timer)
        and type(getattr(thread.function, "__self__", None)).__module__.startswith("codecarbon")
    ]
    for timer in timers:
        timer.join(timeout=2)
    return [timer for timer in timers if timer.is_alive()]


class Regression(L.LightningModule):
    """A linear model that raises in the training step ``fail_at``, if given."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.layer, self.fail_at = torch.nn.Linear(4, 1), fail_at

    def training_step(self, batch, batch_idx):
        if self.global_step == self.fail_at:
            raise RuntimeError("broken batch")
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x).squeeze(1), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def tiny_fit(
    root: Path, meter: energy.EnergyMeter, module: L.LightningModule | None = None
) -> None:
    loader = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64)), batch_size=8)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=root,
        callbacks=[meter],
    )  # fmt: skip
    trainer.fit(module or Regression(), loader)


@needs_codecarbon
def test_fit_reports_energy_to_a_file_the_loggers_and_the_console(tmp_path: Path, capsys) -> None:
    config = config_with_meter(tmp_path)
    cli = run("fit", tmp_path, f"--trainer.logger={LOGGERS / 'csv.yaml'}", config=config)
    path = cli.run_dir / "energy.json"
    report = json.loads(path.read_text())
    (fit,) = report["fits"]
    assert report["estimate"] is True and fit["status"] == "finished"
    assert report["energy_kwh"] == fit["energy_kwh"] > 0 and report["co2_kg"] == fit["co2_kg"] > 0
    assert fit["energy_kwh"] == pytest.approx(fit["cpu_kwh"] + fit["gpu_kwh"] + fit["ram_kwh"])
    assert fit["co2_kg"] / fit["energy_kwh"] * 1000 == pytest.approx(
        fit["carbon_intensity_g_per_kwh"]
    )
    assert 50 < fit["carbon_intensity_g_per_kwh"] < 1500  # USA's average grid: ~370 g/kWh
    assert fit["country_iso_code"] == "USA" and fit["global_step"] == cli.trainer.global_step
    # Every part is declared measured or modelled, and the words say which.
    assert {"cpu", "ram"} <= set(fit["sources"]) == {*fit["measured"], *fit["modelled"]}
    for part, how in fit["sources"].items():
        assert how.startswith("measured by" if part in fit["measured"] else ("modelled", "given"))
    assert ("no power meter read" in report["method"]) == (not fit["measured"])
    assert logged(cli, "energy/kwh") == [pytest.approx(fit["energy_kwh"])]
    assert logged(cli, "energy/co2_kg") == [pytest.approx(fit["co2_kg"])]
    assert logged(cli, "energy/duration_s") == [pytest.approx(fit["duration_s"])]
    (line,) = energy_lines(capsys.readouterr().out)
    assert line.startswith(f"Energy: {fit['energy_kwh']:.3g} kWh, {fit['co2_kg']:.3g} kg CO2eq")
    assert f"(estimate: {report['method']})" in line and line.endswith(f"-> {path}")


@needs_codecarbon
def test_codecarbon_stays_offline_quiet_and_inside_the_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # A machine whose CodeCarbon settings ask for every output it has, a lock and a token.
    hostile = {
        "save_to_api": "true", "save_to_file": "true", "output_methods": "csv,api,prometheus",
        "emissions_endpoint": "http://127.0.0.1:9", "api_endpoint": "http://127.0.0.1:9",
        "electricitymaps_api_token": "token", "co2_signal_api_token": "token",
        "allow_multiple_runs": "false", "log_level": "debug",
    }  # fmt: skip
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    for folder in (home, cwd):
        folder.mkdir()
        settings = "".join(f"{key} = {value}\n" for key, value in hostile.items())
        (folder / ".codecarbon.config").write_text(f"[codecarbon]\n{settings}")
    for key, value in hostile.items():
        monkeypatch.setenv(f"CODECARBON_{key.upper()}", value)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    connections = []

    def no_network(*args):
        connections.append(args[-1] if len(args) == 2 else args[:2])  # address or (host, port)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)  # name lookups too
    lock = Path(tempfile.gettempdir()) / ".codecarbon.lock"
    lock_existed = lock.exists()

    cli = run("fit", tmp_path / "runs", *NO_LOGGER, config=config_with_meter(tmp_path))
    assert connections == []
    assert sorted(p.name for p in cwd.iterdir()) == sorted(p.name for p in home.iterdir())
    assert [p.name for p in cwd.iterdir()] == [".codecarbon.config"]  # no emissions.csv
    assert lock.exists() == lock_existed  # no lock file: parallel runs don't collide
    assert json.loads((cli.run_dir / "energy.json").read_text())["energy_kwh"] > 0
    captured = capsys.readouterr()
    assert len(energy_lines(captured.out)) == 1
    assert "[codecarbon" not in captured.out + captured.err  # its log level: errors only
    assert codecarbon_timers_left() == []


@needs_codecarbon
def test_a_failed_fit_still_reports_and_stops_the_tracker(tmp_path: Path, capsys) -> None:
    meter = energy.EnergyMeter()
    with pytest.raises(RuntimeError, match="broken batch"):
        tiny_fit(tmp_path, meter, Regression(fail_at=3))
    (fit,) = json.loads((tmp_path / "energy.json").read_text())["fits"]
    assert fit["status"] == "interrupted by RuntimeError" and fit["global_step"] == 3
    assert fit["energy_kwh"] > 0
    (line,) = energy_lines(capsys.readouterr().out)
    assert line.startswith("Energy (fit interrupted by RuntimeError): ")
    assert meter._tracker is None and codecarbon_timers_left() == []


@needs_codecarbon
def test_a_resumed_fit_adds_its_energy_to_the_run(tmp_path: Path, capsys) -> None:
    tiny_fit(tmp_path, energy.EnergyMeter())
    tiny_fit(tmp_path, energy.EnergyMeter())  # a new process resuming in the same run directory
    report = json.loads((tmp_path / "energy.json").read_text())
    first, second = report["fits"]
    assert report["energy_kwh"] == pytest.approx(first["energy_kwh"] + second["energy_kwh"])
    assert report["co2_kg"] == pytest.approx(first["co2_kg"] + second["co2_kg"])
    assert report["duration_s"] == pytest.approx(first["duration_s"] + second["duration_s"])
    lines = energy_lines(capsys.readouterr().out)
    assert len(lines) == 2 and "run total" not in lines[0]
    assert f"run total {report['energy_kwh']:.3g} kWh over 2 fits" in lines[1]


@needs_codecarbon
def test_a_country_without_grid_data_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3-letter ISO code"):
        energy.EnergyMeter(country_iso_code="US")
    meter = energy.EnergyMeter(country_iso_code="XYZ")
    with pytest.raises(ValueError, match="no grid data for country_iso_code 'XYZ'"):
        tiny_fit(tmp_path, meter)
    assert not (tmp_path / "energy.json").exists()


def test_without_codecarbon_it_says_how_to_install_it_once_and_does_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # `import codecarbon` now fails
    meter = energy.EnergyMeter()
    tiny_fit(tmp_path, meter)
    tiny_fit(tmp_path, meter)
    assert capsys.readouterr().out.splitlines() == [energy.ENABLE_HINT]
    assert 'pip install -e ".[energy]"' in energy.ENABLE_HINT
    assert not (tmp_path / "energy.json").exists() and meter.records == []


class CPU:  # named like CodeCarbon's hardware classes, which describe_sources reads
    def __init__(self, mode: str, tdp: float = 85, generic: bool = False) -> None:
        self._mode, self._tdp, self._is_generic_tdp = mode, tdp, generic


class RAM:
    def __init__(self, forced: float | None = None) -> None:
        self._force_ram_power = forced


class NvidiaGPUDevice:
    pass


class GPU:
    def __init__(self) -> None:
        self.devices = type("AllGPUDevices", (), {"devices": [NvidiaGPUDevice()]})()


class Tracker:
    def __init__(self, *hardware) -> None:
        self._hardware = list(hardware)


def test_sources_say_what_was_measured_and_what_was_modelled() -> None:
    assert energy.describe_sources(Tracker(RAM(), CPU("cpu_load", 8))) == {
        "cpu": (False, "modelled from CPU load x 8 W TDP"),
        "ram": (False, "modelled from its size"),
    }
    assert energy.describe_sources(Tracker(RAM(10), CPU("intel_rapl"), GPU())) == {
        "cpu": (True, "measured by RAPL"),
        "gpu": (True, "measured by NVML"),
        "ram": (False, "given as 10 W"),
    }
    generic = energy.describe_sources(Tracker(CPU("constant", 85, generic=True)))
    assert generic == {"cpu": (False, "modelled as half of 85 W TDP (CodeCarbon's generic value)")}
    assert energy.describe_sources(Tracker(CPU("some_new_mode"))) == {
        "cpu": (False, "modelled by CodeCarbon's 'some_new_mode' mode")  # never called measured
    }
