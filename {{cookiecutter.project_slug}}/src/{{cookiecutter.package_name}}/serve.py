"""The ``serve`` subcommand: a checkpoint behind HTTP, with a watch on data shift.

``POST /predict`` takes images as multipart field ``file`` (one or several) or table rows as
JSON ``{"instances": [{column: value, ...}, ...]}``, prepares them with the data module's own
conversion (the code ``predict`` runs, with the state saved in the checkpoint) and answers
``{"predictions": [{"label": ..., "probabilities": {class: p, ...}}, ...]}``. Inputs the model
can't take get a 4xx answer whose ``detail`` names the problem; the service keeps serving.

``GET /health`` says the model is loaded; ``GET /drift`` compares the last ``drift_window``
inputs with the training profile saved at fit time (see ``data.drift``), and the log says
when a feature starts or stops drifting.
"""

from __future__ import annotations

import copy
import json
import logging
import socket
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from importlib.util import find_spec
from typing import Any

import lightning as L
import torch

from .data.base import CheckedDataModule, InputError
from .data.drift import MIN_SAMPLES, THRESHOLD, RecentInputs

try:
    import uvicorn
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse
except ImportError as error:  # an optional extra: the rest of the project runs without it
    raise ImportError(
        "`serve` needs FastAPI, uvicorn and python-multipart: pip install -e '.[serve]'"
    ) from error

log = logging.getLogger(__name__)
RECORDS = 'JSON {"instances": [{"column": value, ...}, ...]}'


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413, refused from its
    Content-Length before any of it is read, or as soon as a body sent without one passes it."""

    def __init__(self, app: Callable, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.limit:
            response = JSONResponse({"detail": self.message(int(length))}, status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # raised into the endpoint reading the body
                raise HTTPException(413, self.message(received))
            return message

        await self.app(scope, counted, send)

    def message(self, size: int) -> str:
        return f"the body holds {size} bytes or more, over max_body_bytes={self.limit}"


class Service:
    """The model, its data module's conversion and the recent inputs, shared by requests."""

    def __init__(
        self,
        model: L.LightningModule,
        datamodule: CheckedDataModule,
        device: torch.device | str,
        forward_context: Callable[[], AbstractContextManager],
        drift_window: int,
        drift_threshold: float,
        drift_min_samples: int,
        max_decodes: int = 2,
    ) -> None:
        self.model, self.datamodule = model.to(device).eval(), datamodule
        self.device, self.forward_context = torch.device(device), forward_context
        self.recent = RecentInputs(datamodule.drift_profile, drift_window)
        self.threshold, self.min_samples = drift_threshold, drift_min_samples
        self.lock = threading.Lock()  # one request at a time changes the window
        # Decoding an image takes up to data.max_pixels x 8 bytes: a bounded number at once,
        # whatever the number of requests; the others wait holding only their bytes. Threads
        # of their own, not a semaphore: each thread that decodes keeps a malloc arena as
        # large as its largest image (8 threads of the request pool: 10 GB, measured).
        self.decoders = ThreadPoolExecutor(max_decodes, thread_name_prefix="decode")
        self.drifted: list[str] = []

    def predict(self, inputs: list) -> list[dict[str, Any]]:
        x, features = self.decoders.submit(self.datamodule.convert_inputs, inputs).result()
        with torch.inference_mode(), self.forward_context():
            probabilities = self.model.predict_step(x.to(self.device), 0).float().cpu()
        if self.recent.size:  # drift_window 0: no tracking
            with self.lock:
                self.recent.add(features)
                self.log_changes(self.drift())
        names = self.datamodule.class_names
        labels = self.model.decide(probabilities).tolist()  # see the Classifier's decision
        return [
            {"label": names[label], "probabilities": dict(zip(names, row.tolist(), strict=True))}
            for label, row in zip(labels, probabilities, strict=True)
        ]

    def drift(self) -> dict[str, Any]:
        return self.recent.judge(self.threshold, self.min_samples) | {"window": self.recent.size}

    def log_changes(self, report: dict[str, Any]) -> None:
        """A log line when a feature starts or stops drifting, not one per request."""
        drifted, features = report["drifted"], report.get("features", {})
        for name in (n for n in drifted if n not in self.drifted):
            result = features[name]
            log.warning(
                "Drift in %r: PSI %.3f over the last %d inputs (noise %.3f, threshold %s)",
                name, result["psi"], report["samples"], result["noise"], self.threshold,
            )  # fmt: skip
        for name in (n for n in self.drifted if n not in drifted):
            log.info("No drift in %r any more over the last %d inputs", name, report["samples"])
        self.drifted = drifted


def create_app(
    model: L.LightningModule,
    datamodule: CheckedDataModule,
    device: torch.device | str = "cpu",
    forward_context: Callable[[], AbstractContextManager] = nullcontext,
    max_body_bytes: int = 16 * 2**20,
    drift_window: int = 1000,
    drift_threshold: float = THRESHOLD,
    drift_min_samples: int = MIN_SAMPLES,
    max_decodes: int = 2,
) -> FastAPI:
    """The HTTP service of ``model``, whose inputs ``datamodule`` (its fitted state restored
    from the same checkpoint) prepares; ``forward_context``: the trainer's precision;
    ``max_decodes``: requests whose inputs are converted at once."""
    kind = datamodule.serving_input
    if kind == "files" and find_spec("python_multipart") is None and find_spec("multipart") is None:
        raise ImportError("Serving images needs python-multipart: pip install -e '.[serve]'")
    service = Service(
        model, datamodule, device, forward_context, drift_window, drift_threshold,
        drift_min_samples, max_decodes,
    )  # fmt: skip
    if datamodule.drift_profile is None:
        log.warning("This checkpoint holds no training profile: /drift can't judge drift")
    app = FastAPI(title=f"{__package__} classifier")
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    @app.exception_handler(InputError)
    async def rejected(request: Request, error: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "classes": datamodule.class_names,
            "inputs": kind,
            "drift_profile": datamodule.drift_profile is not None,
        }

    @app.get("/drift")
    def drift_report() -> dict[str, Any]:
        with service.lock:
            return service.drift()

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        inputs = await (read_files(request) if kind == "files" else read_records(request))
        return {"predictions": await run_in_threadpool(service.predict, inputs)}

    return app


async def read_files(request: Request) -> list[tuple[str, bytes]]:
    """The uploaded files of multipart field ``file``, as (name, content)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, 'send images as multipart/form-data, field "file"')
    async with request.form() as form:
        uploads = form.getlist("file")
        if any(isinstance(upload, str) for upload in uploads):
            raise HTTPException(422, 'field "file" must hold files, not text')
        files = [(u.filename or f"file {i}", await u.read()) for i, u in enumerate(uploads)]
    if not files:
        raise HTTPException(400, 'no files: send images as multipart field "file"')
    return files


async def read_records(request: Request) -> list:
    """The rows of a JSON body ``{"instances": [...]}``."""
    body = await request.body()
    if not body.strip():
        raise HTTPException(400, f"empty body: send {RECORDS}")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise HTTPException(400, f"the body is not JSON ({error}): send {RECORDS}") from error
    except RecursionError as error:  # the parser recurses once a level: 500 without this
        limit = sys.getrecursionlimit()
        message = f"the body is nested too deeply to parse (Python's limit: {limit} levels)"
        raise HTTPException(400, f"{message}: send {RECORDS}") from error
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        raise HTTPException(400, f"no instances: send {RECORDS}")
    return instances


def run(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` until interrupted; port 0 takes a free port, which the log names."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.create_server((host, port), family=family)
    bound = sock.getsockname()[1]
    logging_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    logging_config["loggers"][__name__] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    config = uvicorn.Config(app, log_config=logging_config, timeout_graceful_shutdown=5)
    shown = f"[{host}]" if ":" in host else host
    log.info("Serving on http://%s:%d (POST /predict, GET /health, GET /drift)", shown, bound)
    uvicorn.Server(config).run(sockets=[sock])
