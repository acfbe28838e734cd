"""``energy.json``: CodeCarbon's estimate of the energy and CO2 of each fit, made offline."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

ENABLE_HINT = (
    "Energy estimate off: CodeCarbon is not installed. Turn it on with "
    'pip install -e ".[energy]" in the project (or pip install codecarbon).'
)
# How CodeCarbon reads each part (its CPU ``_mode``, its hardware class), as this file words it.
CPU_METERS = {
    "intel_rapl": "RAPL",
    "windows_emi": "Windows energy meter",
    "intel_power_gadget": "Intel Power Gadget",
}
GPU_METERS = {"Nvidia": "NVML", "AMD": "AMD SMI"}


class EnergyMeter(L.Callback):
    """Energy (kWh) and CO2-equivalent (kg) of each ``fit``, estimated by CodeCarbon offline.

    Writes ``energy.json`` in the run directory, sends ``energy/kwh``, ``energy/co2_kg`` and
    ``energy/duration_s`` to the loggers (if any) and prints one line saying how it was
    estimated. Power comes from a meter where CodeCarbon can read one (RAPL for the CPU,
    NVML for NVIDIA GPUs) and from a model where it can't: CPU load times a TDP, RAM from its
    size. ``energy.json`` lists which parts were ``measured`` and which ``modelled``. Grams of
    CO2 come from the country's average grid intensity: an estimate either way.

    Offline: CodeCarbon sends nothing, prompts for nothing, writes no file of its own (no
    ``emissions.csv``, no lock file, so several runs can be measured at once) and logs only
    errors. The fit is measured by global rank 0: the whole machine it runs on (every GPU
    that machine shows), not the other nodes.
    Without CodeCarbon (``pip install -e ".[energy]"``) it prints how to turn it on, once.

    CodeCarbon detects the hardware once per process (a second or two). A resumed fit adds
    its own record to ``energy.json``, whose totals cover every fit of the run directory.
    Settings not listed here (``pue``, ``force_ram_power``, ``gpu_ids``) are read from
    CodeCarbon's own ``.codecarbon.config`` or ``CODECARBON_*`` environment variables.
    """

    def __init__(
        self,
        country_iso_code: str = "USA",
        region: str | None = None,
        measure_power_secs: float = 15.0,
        force_cpu_power: float | None = None,
        filename: str = "energy.json",
        log_level: Literal["debug", "info", "warning", "error", "critical"] = "error",
    ) -> None:
        """
        Args:
            country_iso_code: Where the machine draws its power (ISO 3166 alpha-3: USA,
                FRA, DEU, ...): picks the grid's average carbon intensity.
            region: A US state or Canadian province (e.g. ``california``) for a regional
                intensity; None: the country's average.
            measure_power_secs: Seconds between CodeCarbon's energy readings.
            force_cpu_power: The CPU's TDP in watts, for when no power meter can be read and
                CodeCarbon doesn't know the CPU model (CodeCarbon then models the CPU even
                where RAPL could be read); None: CodeCarbon's figure.
            filename: The report, relative to the run directory.
            log_level: CodeCarbon's own log level.
        """
        if len(country_iso_code) != 3 or not country_iso_code.isalpha():
            raise ValueError(
                "country_iso_code must be a 3-letter ISO code such as USA, FRA or DEU, "
                f"not {country_iso_code!r}"
            )
        self.country_iso_code = country_iso_code.upper()
        self.region = region.lower() if region else None
        self.measure_power_secs = measure_power_secs
        self.force_cpu_power = force_cpu_power
        self.filename = filename
        self.log_level = log_level
        self.records: list[dict[str, Any]] = []  # one per fit measured by this instance
        self._tracker: Any = None
        self._fit_started = 0.0
        self._hinted = False

    def tracker_options(self, output_dir: str = ".") -> dict[str, Any]:
        """Keyword arguments of CodeCarbon's ``OfflineEmissionsTracker``."""
        forced = {} if self.force_cpu_power is None else {"force_cpu_power": self.force_cpu_power}
        return {
            "country_iso_code": self.country_iso_code,
            "region": self.region,
            "measure_power_secs": self.measure_power_secs,
            "tracking_mode": "machine",
            "log_level": self.log_level,
            "allow_multiple_runs": True,  # no lock file: parallel tests and runs don't collide
            "output_methods": [],  # no emissions.csv, no API, no Prometheus/Logfire
            "output_handlers": [],
            "output_dir": output_dir,  # where any file it still writes goes
            "emissions_endpoint": None,
            # "" rather than None: None would let a token from CodeCarbon's config through.
            "electricitymaps_api_token": "",
            **forced,
        }

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._stop(trainer, "ended before the next fit")  # nothing running, normally
        try:
            from codecarbon import OfflineEmissionsTracker
            from codecarbon.input import DataSource
        except ImportError as error:  # one line, once: the run goes on without the estimate
            if not self._hinted:
                broken = f"Energy estimate off: CodeCarbon could not be imported ({error})."
                print(ENABLE_HINT if error.name == "codecarbon" else broken)
                self._hinted = True
            return
        if self.country_iso_code not in DataSource().get_global_energy_mix_data():
            raise ValueError(
                f"EnergyMeter: CodeCarbon has no grid data for country_iso_code "
                f"{self.country_iso_code!r}; use an ISO 3166 alpha-3 code such as USA or FRA."
            )
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)  # CodeCarbon requires its output_dir
        _quiet_codecarbon(self.log_level)
        self._tracker = OfflineEmissionsTracker(**self.tracker_options(str(run_dir)))
        self._fit_started = time.perf_counter()
        self._tracker.start()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(trainer, "finished")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._stop(trainer, f"interrupted by {type(exception).__name__}")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stop(trainer, "ended early")

    def _stop(self, trainer: L.Trainer, status: str) -> None:
        """Stop the tracker if one runs, then report what it measured."""
        tracker, self._tracker = self._tracker, None
        if tracker is None:
            return
        tracker.stop()  # CodeCarbon logs and swallows its own errors
        data = getattr(tracker, "final_emissions_data", None)
        if data is None:
            print(
                "Energy: not estimated, CodeCarbon failed "
                '(EnergyMeter log_level "warning" shows why).'
            )
            return
        try:
            self._report(trainer, tracker, data, status)
        except Exception as error:  # an estimate must not take the run down with it
            rank_zero_warn(f"EnergyMeter could not report the energy estimate: {error!r}")

    def _report(self, trainer: L.Trainer, tracker: Any, data: Any, status: str) -> None:
        sources = describe_sources(tracker)
        fit_duration = time.perf_counter() - self._fit_started
        started = datetime.fromtimestamp(time.time() - fit_duration)
        record = {
            "status": status,
            "started": started.isoformat(timespec="seconds"),
            "global_step": trainer.global_step,
            "energy_kwh": data.energy_consumed,
            "co2_kg": data.emissions,
            "duration_s": data.duration,
            "cpu_kwh": data.cpu_energy,
            "gpu_kwh": data.gpu_energy,
            "ram_kwh": data.ram_energy,
            "cpu_power_w": data.cpu_power,  # averages over the fit
            "gpu_power_w": data.gpu_power,
            "ram_power_w": data.ram_power,
            "measured": [part for part, (measured, _) in sources.items() if measured],
            "modelled": [part for part, (measured, _) in sources.items() if not measured],
            "sources": {part: how for part, (_, how) in sources.items()},
            "country_iso_code": data.country_iso_code,
            "region": data.region,
            "carbon_intensity_g_per_kwh": (
                1000 * data.emissions / data.energy_consumed if data.energy_consumed else None
            ),
            "codecarbon_version": data.codecarbon_version,
        }
        self.records.append(record)
        path = Path(trainer.default_root_dir) / self.filename
        report = save_report(record, path)
        metrics = {
            "energy/kwh": record["energy_kwh"],
            "energy/co2_kg": record["co2_kg"],
            "energy/duration_s": record["duration_s"],
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        print(summary_line(record, report, path))


def _quiet_codecarbon(level: str) -> None:
    # Its first messages come before it applies its own log_level (and importing it resets
    # the level from CODECARBON_LOG_LEVEL).
    logging.getLogger("codecarbon").setLevel(level.upper())


def describe_sources(tracker: Any) -> dict[str, tuple[bool, str]]:
    """Per part (cpu, gpu, ram): whether a meter was read, and how the power was found.

    Reads CodeCarbon's hardware list, which it does not document: anything unrecognised is
    reported as modelled, never as measured.
    """
    sources: dict[str, tuple[bool, str]] = {}
    for hardware in getattr(tracker, "_hardware", []):
        kind = type(hardware).__name__
        if kind == "CPU":
            mode, tdp = getattr(hardware, "_mode", None), getattr(hardware, "_tdp", None)
            tdp = f"{tdp:g} W TDP" if isinstance(tdp, int | float) else "an unknown TDP"
            if getattr(hardware, "_is_generic_tdp", False):
                tdp += " (CodeCarbon's generic value)"
            if mode in CPU_METERS:
                sources["cpu"] = (True, f"measured by {CPU_METERS[mode]}")
            elif mode == "cpu_load":
                sources["cpu"] = (False, f"modelled from CPU load x {tdp}")
            elif mode == "constant":
                sources["cpu"] = (False, f"modelled as half of {tdp}")
            else:
                sources["cpu"] = (False, f"modelled by CodeCarbon's {mode!r} mode")
        elif kind == "GPU":
            devices = getattr(getattr(hardware, "devices", None), "devices", [])
            names = {type(device).__name__ for device in devices}
            meters = sorted({m for key, m in GPU_METERS.items() for n in names if key in n})
            sources["gpu"] = (True, f"measured by {' and '.join(meters) or 'the GPU driver'}")
        elif kind == "RAM":
            forced = getattr(hardware, "_force_ram_power", None)
            how = f"given as {forced:g} W" if forced is not None else "modelled from its size"
            sources["ram"] = (False, how)
        else:
            sources[kind.lower()] = (False, "estimated by CodeCarbon")
    return dict(sorted(sources.items()))  # cpu, gpu, ram


def save_report(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """Add ``record`` to the run's ``energy.json`` (a resumed run keeps its earlier fits)."""
    fits = []
    if path.is_file():
        try:
            fits = list(json.loads(path.read_text())["fits"])
        except (ValueError, KeyError, TypeError):
            fits = []  # not a report of this callback: replaced
    fits.append(record)
    report = {
        "estimate": True,
        "method": method(record),
        "energy_kwh": sum(fit["energy_kwh"] for fit in fits),
        "co2_kg": sum(fit["co2_kg"] for fit in fits),
        "duration_s": sum(fit["duration_s"] for fit in fits),
        "fits": fits,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def method(record: dict[str, Any]) -> str:
    """How the latest fit was estimated, in words: what was measured, what modelled."""
    sources = record["sources"]
    measured = [f"{part.upper()} {sources[part]}" for part in record["measured"]]
    modelled = [f"{part.upper()} {sources[part]}" for part in record["modelled"]]
    parts = ["; ".join(measured) if measured else "no power meter read"]
    parts += [", ".join(modelled)] if modelled else []
    place = record["country_iso_code"] + (f"/{record['region']}" if record["region"] else "")
    return "; ".join([*parts, f"{place} grid average"])


def summary_line(record: dict[str, Any], report: dict[str, Any], path: Path) -> str:
    """The one line printed after each fit."""
    status = "" if record["status"] == "finished" else f" (fit {record['status']})"
    line = (
        f"Energy{status}: {record['energy_kwh']:.3g} kWh, {record['co2_kg']:.3g} kg CO2eq "
        f"in {_duration(record['duration_s'])} (estimate: {report['method']})"
    )
    if len(report["fits"]) > 1:
        line += f"; run total {report['energy_kwh']:.3g} kWh over {len(report['fits'])} fits"
    return f"{line} -> {path}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"
