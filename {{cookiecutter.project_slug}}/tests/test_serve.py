"""``serve`` as a client meets it: a real server process on loopback, real HTTP requests.

One server per module (each start costs seconds of imports), serving the shared fitted run.
Images and tables differ only in how inputs travel; ``Images`` and ``Tables`` below say how.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import NO_LOGGER, PACKAGE, PROJECT, datamodule_class, newest_output, run

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

KIND = datamodule_class().serving_input
if KIND == "files" and find_spec("python_multipart") is None and find_spec("multipart") is None:
    pytest.skip("serving images needs python-multipart", allow_module_level=True)

# `python -m PACKAGE ARGS` that also exits when the tests do, however they end (even killed):
# its stdin is a pipe from the test process, which the system closes with it.
WATCHED = (
    "import os, runpy, sys, threading\n"
    "threading.Thread(target=lambda: (sys.stdin.read(), os._exit(1)), daemon=True).start()\n"
    f"runpy.run_module({PACKAGE!r}, run_name='__main__', alter_sys=True)\n"
)
LIMIT = 1_000_000  # max_body_bytes of the test server
WINDOW = 150  # drift_window: a test that sends this many inputs owns the whole window


class Images:
    """Inputs as PNG files, posted as multipart field ``file``."""

    @staticmethod
    def held_out(datamodule, count: int) -> list[bytes]:
        return [content for _, content in datamodule.held_out_inputs(count)]

    @staticmethod
    def post(client, inputs: list[bytes]) -> httpx.Response:
        files = [("file", (f"{i:03d}.png", image, "image/png")) for i, image in enumerate(inputs)]
        return client.post("/predict", files=files)

    @staticmethod
    def predict_arguments(inputs: list[bytes], folder: Path) -> list[str]:
        folder.mkdir()
        for i, image in enumerate(inputs):
            (folder / f"{i:03d}.png").write_bytes(image)
        return [f"--data.predict_root={folder}"]

    @staticmethod
    def shifts(datamodule, count: int) -> dict[str, tuple[list[bytes], set[str]]]:
        """Shifted held-out images, and the features that must drift."""
        pixels = datamodule.dataset("test").pixels(range(count))
        inverted = [png(255 - image) for image in pixels]
        larger = [png(image.repeat(2, axis=1).repeat(2, axis=2)) for image in pixels]
        return {"inverted": (inverted, {"grey mean"}), "larger": (larger, {"width", "height"})}

    PROBLEMS = (
        "not an image", "truncated png", "too many pixels", "no files", "empty body",
        "not multipart",
    )  # fmt: skip

    @staticmethod
    def bad_requests(valid: bytes) -> dict[str, tuple[dict, int, str]]:
        """Each problem's request, the status it gets and words its answer holds."""
        multipart = {"content-type": "multipart/form-data; boundary=x"}
        return {
            "not an image": ({"files": {"file": ("notes.txt", b"hi")}}, 422, "not an image"),
            "truncated png": (
                {"files": {"file": ("cut.png", valid[: len(valid) // 2])}},
                422, "cut.png: the image fails to decode",
            ),
            "too many pixels": (
                {"files": {"file": ("huge.png", claims_pixels(100_000, 100_000))}},
                422, "huge.png: 100000x100000 pixels (10,000,000,000) is over the limit",
            ),
            "no files": ({"files": {"picture": ("a.png", valid)}}, 400, "no files"),
            "empty body": ({"content": b"", "headers": multipart}, 400, "no files"),
            "not multipart": ({"json": {"instances": []}}, 415, "multipart/form-data"),
        }  # fmt: skip


class Tables:
    """Inputs as rows, posted as JSON ``{"instances": [...]}``."""

    @staticmethod
    def held_out(datamodule, count: int) -> list[dict]:
        return datamodule.held_out_inputs(count)

    @staticmethod
    def post(client, inputs: list[dict]) -> httpx.Response:
        return client.post("/predict", json={"instances": inputs})

    @staticmethod
    def predict_arguments(inputs: list[dict], folder: Path) -> list[str]:
        import pandas as pd

        folder.mkdir()
        pd.DataFrame(inputs).to_csv(folder / "rows.csv", index=False)
        return [f"--data.predict_path={folder / 'rows.csv'}"]

    @staticmethod
    def shifts(datamodule, count: int) -> dict[str, tuple[list[dict], set[str]]]:
        """Held-out rows with one numeric column moved by four of its standard deviations."""
        rows = Tables.held_out(datamodule, count)
        name = next(name for name, value in rows[0].items() if isinstance(value, float))
        std = float(np.std([row[name] for row in rows]))
        return {name: ([row | {name: row[name] + 4 * std} for row in rows], {name})}

    PROBLEMS = (
        "missing column", "extra column", "text in a number column", "empty body",
        "no instances", "not json", "deeply nested json",
    )  # fmt: skip

    @staticmethod
    def bad_requests(valid: dict) -> dict[str, tuple[dict, int, str]]:
        """Each problem's request, the status it gets and words its answer holds."""
        missing = dict(list(valid.items())[1:])
        number = next(name for name, value in valid.items() if isinstance(value, float))
        return {
            "missing column": ({"json": {"instances": [missing]}}, 422, "no column"),
            "extra column": ({"json": {"instances": [valid | {"x": 1}]}}, 422, "unknown column"),
            "text in a number column": (
                {"json": {"instances": [valid, valid | {number: "many"}]}},
                422, f"instance 1: column {number!r} takes a finite number, not 'many'",
            ),
            "empty body": ({"content": b""}, 400, "empty body"),
            "no instances": ({"json": {"instances": []}}, 400, "no instances"),
            "not json": ({"content": b"{instances"}, 400, "not JSON"),
            # 200 KB, under max_body_bytes: Python's JSON parser recurses once a level.
            "deeply nested json": (
                {"content": b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"},
                400, "nested too deeply to parse",
            ),
        }  # fmt: skip


WIRE = {"files": Images, "records": Tables}[KIND]


def png(pixels: np.ndarray) -> bytes:
    """A ``uint8`` (C, H, W) image as a PNG file."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0)).save(out, "PNG")
    return out.getvalue()


def claims_pixels(height: int, width: int) -> bytes:
    """A PNG of 100 bytes whose header claims ``height`` x ``width`` RGBA pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(bytes(64)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


@dataclass
class Server:
    url: str
    log: Path
    client: httpx.Client

    def host_port(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").split(":")
        return host, int(port)


def wait_for_server(process: subprocess.Popen, log: Path, timeout: float = 240) -> str:
    """The URL the server's log names, once ``/health`` answers there."""
    deadline, url = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if url is None and (found := re.search(r"Serving on (http://\S+:\d+)", log.read_text())):
            url = found.group(1)
        if url is not None:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    pytest.fail(f"serve did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(fitted, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``serve`` of the shared fitted run in its own process; stopped however the tests end."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [
        "serve", f"--config={fitted.run_dir / 'config.yaml'}",
        f"--ckpt_path={fitted.run_dir / 'checkpoints' / 'last.ckpt'}", *NO_LOGGER,
        "--port=0", f"--max_body_bytes={LIMIT}", f"--drift_window={WINDOW}",
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", WATCHED, *command],
            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = wait_for_server(process, log)
        with httpx.Client(base_url=url, timeout=60) as client:
            yield Server(url, log, client)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdin.close()


def test_health_says_the_model_is_loaded(server: Server, fitted) -> None:
    answer = server.client.get("/health")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
    assert answer.json()["classes"] == fitted.datamodule.class_names
    assert answer.json()["drift_profile"] is True


def test_http_answers_as_predict_does(server: Server, fitted, tmp_path: Path) -> None:
    """The same inputs through ``predict`` (a CSV of 6-decimal probabilities) and through
    HTTP: the same labels and probabilities."""
    inputs = WIRE.held_out(fitted.datamodule, 20)
    checkpoint = fitted.run_dir / "checkpoints" / "last.ckpt"
    arguments = WIRE.predict_arguments(inputs, tmp_path / "inputs")
    run("predict", tmp_path / "runs", *NO_LOGGER, f"--ckpt_path={checkpoint}", *arguments)
    rows = list(csv.DictReader(newest_output(fitted.run_dir, "predictions.csv").open()))
    answer = WIRE.post(server.client, inputs)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert len(predictions) == len(rows) == len(inputs)
    for row, prediction in zip(rows, predictions, strict=True):
        assert prediction["label"] == row["predicted"]
        for name, p in prediction["probabilities"].items():
            assert p == pytest.approx(float(row[name]), abs=1e-6)


def test_the_readmes_first_request_is_answered(server: Server, fitted, tmp_path: Path) -> None:
    """The README's "embedded data" commands, run as written: the file they make, posted as
    their ``curl`` posts it, gets a prediction."""
    section = (PROJECT / "README.md").read_text().split("## The embedded data")[1]
    make, curl = section.split("```bash\n")[1].split("```")[0].strip().splitlines()
    make = make.replace("python ", f"{shlex.quote(sys.executable)} ", 1)  # this venv's
    subprocess.run(make, shell=True, cwd=tmp_path, check=True)
    name = re.search(r"@(\S+)", curl).group(1)
    content = (tmp_path / name).read_bytes()
    if " -F " in curl:
        answer = server.client.post("/predict", files=[("file", (name, content, "image/png"))])
    else:
        headers = {"content-type": "application/json"}
        answer = server.client.post("/predict", content=content, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["label"] in fitted.datamodule.class_names


@pytest.mark.parametrize("problem", WIRE.PROBLEMS)
def test_bad_requests_get_4xx_naming_the_problem(server: Server, fitted, problem: str) -> None:
    valid = WIRE.held_out(fitted.datamodule, 1)
    request, status, words = WIRE.bad_requests(valid[0])[problem]
    answer = server.client.post("/predict", **request)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]
    assert WIRE.post(server.client, valid).status_code == 200  # still serving


def test_oversized_bodies_get_413_before_they_are_read(server: Server, fitted) -> None:
    # A Content-Length over the limit is refused at once: this body never comes.
    with socket.create_connection(server.host_port(), timeout=30) as connection:
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )
        assert connection.recv(4096).startswith(b"HTTP/1.1 413")

    # Without a Content-Length (chunked), reading stops once the body passes the limit.
    def chunked():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
        for _ in range(3 * LIMIT // 100_000):
            yield bytes(100_000)

    headers = {"content-type": "multipart/form-data; boundary=b"} if KIND == "files" else {}
    answer = server.client.post("/predict", content=chunked(), headers=headers)
    assert answer.status_code == 413 and "max_body_bytes" in answer.json()["detail"]
    assert WIRE.post(server.client, WIRE.held_out(fitted.datamodule, 1)).status_code == 200


def test_training_like_inputs_show_no_drift(server: Server, fitted) -> None:
    assert WIRE.post(server.client, WIRE.held_out(fitted.datamodule, WINDOW)).status_code == 200
    report = server.client.get("/drift").json()
    assert report["samples"] == WINDOW == report["window"]
    assert report["status"] == "ok" and report["drifted"] == [], report
    assert set(report["features"]) == set(fitted.datamodule.drift_profile["features"])


def test_shifted_inputs_drift_where_they_shifted(server: Server, fitted) -> None:
    for shift, (inputs, expected) in WIRE.shifts(fitted.datamodule, WINDOW).items():
        assert WIRE.post(server.client, inputs).status_code == 200
        report = server.client.get("/drift").json()
        assert report["status"] == "drift", (shift, report)
        assert expected <= set(report["drifted"]), (shift, report)
        log = server.log.read_text()
        assert all(f"Drift in {name!r}: PSI" in log for name in expected), log[-2000:]


def test_a_checkpoint_without_profile_serves_and_says_so(fitted, tmp_path: Path) -> None:
    """Checkpoints saved before drift profiles: predictions as ever, /drift says why not."""
    from fastapi.testclient import TestClient

    from {{ cookiecutter.package_name }}.serve import create_app
    from {{ cookiecutter.package_name }}.system import Classifier

    checkpoint = torch.load(fitted.run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    del checkpoint[type(fitted.datamodule).__qualname__]["drift_profile"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    datamodule = datamodule_class()(fitted_from=old)
    app = create_app(Classifier.load_from_checkpoint(old, map_location="cpu"), datamodule)
    inputs = WIRE.held_out(fitted.datamodule, 5)
    with TestClient(app) as client:
        assert client.get("/health").json()["drift_profile"] is False
        assert len(WIRE.post(client, inputs).json()["predictions"]) == 5
        report = client.get("/drift").json()
        assert report["status"] == "unavailable" and "no training profile" in report["message"]
    arguments = WIRE.predict_arguments(inputs, tmp_path / "inputs")
    cli = run("predict", tmp_path / "runs", *NO_LOGGER, f"--ckpt_path={old}", *arguments)
    assert len(newest_output(cli.run_dir, "predictions.csv").read_text().splitlines()) == 1 + 5


def test_serve_names_the_class_by_the_checkpoints_decision_offsets(fitted, tmp_path: Path) -> None:
    """Offsets planted in a checkpoint (as ``--model.decision f1_macro`` fits them): serve's
    label follows them, as predict's does, and its probabilities stay the model's."""
    from fastapi.testclient import TestClient

    from {{ cookiecutter.package_name }}.serve import create_app
    from {{ cookiecutter.package_name }}.system import Classifier

    source = fitted.run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(source, weights_only=False)
    offsets = torch.zeros(fitted.datamodule.num_classes)
    offsets[-1] = 100.0  # the last class wins every decision
    checkpoint["state_dict"]["decision_offsets"] = offsets
    decided = tmp_path / "decided.ckpt"
    torch.save(checkpoint, decided)
    inputs = WIRE.held_out(fitted.datamodule, 8)
    answers = {}
    for path in (source, decided):
        datamodule = datamodule_class()(fitted_from=path)
        app = create_app(Classifier.load_from_checkpoint(path, map_location="cpu"), datamodule)
        with TestClient(app) as client:
            answers[path] = WIRE.post(client, inputs).json()["predictions"]
    last = fitted.datamodule.class_names[-1]
    assert [answer["label"] for answer in answers[decided]] == [last] * 8
    assert [a["probabilities"] for a in answers[decided]] == [
        a["probabilities"] for a in answers[source]
    ]
    assert any(answer["label"] != last for answer in answers[source])  # offsets made the change


class SlowDecodes:
    """A data module whose conversion takes a while and counts how many run at once."""

    class_names, drift_profile = ["a", "b"], None

    def __init__(self) -> None:
        self.running, self.most, self.lock = 0, 0, threading.Lock()
        self.threads: set[int] = set()

    def convert_inputs(self, inputs: list) -> tuple[torch.Tensor, dict]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.get_ident())
        time.sleep(0.2)
        with self.lock:
            self.running -= 1
        return torch.zeros(len(inputs), 2), {}


class Logits(torch.nn.Module):
    def predict_step(self, x: torch.Tensor, batch_index: int) -> torch.Tensor:
        return x.softmax(dim=1)

    def decide(self, probabilities: torch.Tensor) -> torch.Tensor:
        return probabilities.argmax(dim=1)


def test_decodes_run_at_most_max_decodes_at_once() -> None:
    """Each decode may take hundreds of MB: eight uploads at once must not all decode, and
    only as many threads decode (each keeps a memory arena as large as its largest image)."""
    from {{ cookiecutter.package_name }}.serve import Service

    datamodule = SlowDecodes()
    service = Service(Logits(), datamodule, "cpu", contextlib.nullcontext, 10, 0.2, 5, 2)
    threads = [threading.Thread(target=service.predict, args=([b"x"],)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert datamodule.most == 2 and len(datamodule.threads) == 2


def test_serve_needs_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="serve needs --ckpt_path"):
        run("serve", tmp_path, *NO_LOGGER)


def test_the_load_benchmark_shows_what_drift_tracking_costs(fitted) -> None:
    """The benchmark script runs on a fitted run and prints both modes side by side."""
    command = [
        sys.executable, str(PROJECT / "benchmarks" / "serve_load.py"),
        f"--config={fitted.run_dir / 'config.yaml'}",
        f"--ckpt_path={fitted.run_dir / 'checkpoints' / 'last.ckpt'}",
        "--requests=24", "--concurrency=4", "--rounds=1", "--warmup=4",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=PROJECT)
    assert result.returncode == 0, result.stderr[-3000:]
    for mode in ("drift tracked", "no tracking"):
        row = rf"^{mode} +\d+\.\d +\d+\.\d +\d+\.\d$"
        assert re.search(row, result.stdout, re.M), result.stdout
    assert re.search(r"^drift tracking costs -?\d+\.\d%", result.stdout, re.M)
