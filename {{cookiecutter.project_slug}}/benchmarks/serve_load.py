"""What drift tracking costs ``serve``: requests/s and latency with and without it, one run.

    python benchmarks/serve_load.py --config runs/NAME/config.yaml \
        --ckpt_path runs/NAME/checkpoints/last.ckpt [--requests 400 --concurrency 16]

Starts the project's own ``serve`` twice from the checkpoint, once tracking drift over the
default window and once with ``--drift_window 0``, on a free loopback port. Each round sends
``requests`` one-input requests, ``concurrency`` at a time, of held-out inputs from the run's
data (an image file or a table row each). The modes take turns for ``rounds`` rounds, so a
machine that slows down mid-run slows both; the table shows each mode's median round.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

MODES = {"drift tracked": [], "no tracking": ["--drift_window=0"]}


def held_out(package: str, config: Path, count: int) -> tuple[str, list]:
    """The run's data module, built from its saved config: how inputs travel, and inputs."""
    runs = importlib.import_module(f"{package}.experiments.cross_validation")
    datamodule = runs.saved_datamodule(config)
    return datamodule.serving_input, datamodule.held_out_inputs(count)


def start(package: str, config: Path, ckpt: Path, options: list[str]) -> tuple:
    """A ``serve`` process on a free port and its URL, once it says where it listens."""
    command = [sys.executable, "-m", package, "serve", f"--config={config}"]
    command += [f"--ckpt_path={ckpt}", "--port=0", "--trainer.logger=false", *options]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if "Serving on http://" in line:
            url = line.split("Serving on ")[1].split()[0]
            # Keep reading its log, or a full pipe would block the server.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, url
    raise SystemExit(f"serve exited with code {process.wait()} before listening")


def load(url: str, kind: str, inputs: list, requests: int, concurrency: int) -> tuple:
    """Requests/s and the latencies (s) of ``requests`` requests, ``concurrency`` at once."""
    local = threading.local()

    def one(i: int) -> float:
        client = getattr(local, "client", None) or httpx.Client(base_url=url, timeout=60)
        local.client = client
        item = inputs[i % len(inputs)]
        started = time.perf_counter()
        if kind == "files":
            response = client.post("/predict", files=[("file", (item[0], item[1], "image/png"))])
        else:
            response = client.post("/predict", json={"instances": [item]})
        response.raise_for_status()
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(one, range(requests)))
    return requests / (time.perf_counter() - started), latencies


def percentile(sorted_values: list[float], share: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(share * len(sorted_values)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the run's config.yaml")
    parser.add_argument("--ckpt_path", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=400, help="per round and mode")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20, help="requests before timing")
    args = parser.parse_args(argv)
    package = yaml.safe_load(args.config.read_text())["data"]["class_path"].partition(".")[0]
    kind, inputs = held_out(package, args.config, 200)
    servers = {mode: start(package, args.config, args.ckpt_path, o) for mode, o in MODES.items()}
    rounds: dict[str, list] = {mode: [] for mode in MODES}
    try:
        for _, url in servers.values():
            load(url, kind, inputs, args.warmup, args.concurrency)
        for _ in range(args.rounds):
            for mode, (_, url) in servers.items():
                rounds[mode].append(load(url, kind, inputs, args.requests, args.concurrency))
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)
    print(
        f"serve: {args.requests} requests of one {'image' if kind == 'files' else 'row'}, "
        f"{args.concurrency} at once, median of {args.rounds} round(s) per mode"
    )
    print(f"{'mode':<14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    rates = {}
    for mode, results in rounds.items():
        rates[mode], latencies = sorted(results, key=lambda r: r[0])[len(results) // 2]
        rate = rates[mode]
        p50, p99 = (1000 * percentile(latencies, q) for q in (0.5, 0.99))
        print(f"{mode:<14} {rate:8.1f} {p50:8.1f} {p99:8.1f}")
    cost = 1 - rates["drift tracked"] / rates["no tracking"]
    print(f"drift tracking costs {cost:.1%} of the requests per second")


if __name__ == "__main__":
    main()
