"""Export a trained classifier for serving without this package: an ONNX model (torch.onnx's
dynamo exporter, run by onnxruntime) and a ``torch.export`` program (``.pt2``). Both take raw
inputs, a table's columns or an image's decoded pixels at any size, because what ``predict``
does to them travels inside (``export_table``, ``export_image``); both accept any batch size,
and neither ships before it matches ``predict`` on the same raw validation inputs."""

from __future__ import annotations

import importlib.util
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

# Another runtime's fp32 kernels sum in another order: exported probabilities differ from
# PyTorch's by at most 6e-7 (measured: small CNN, ResNet-18, MLP; the .pt2 exactly 0), so
# 1e-4 leaves over 100x headroom yet fails on a changed weight or a lost preprocessing step.
ATOL = 1e-4
OUTPUT = "probabilities"
PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # exporter, its translator, the runtime


class ParityError(RuntimeError):
    """An exported model disagrees with PyTorch beyond the tolerance."""


def require_packages() -> None:
    """Fail before any work when the optional export packages are missing."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(f"export needs {', '.join(missing)}: pip install -e '.[export]'")


class Probabilities(nn.Module):
    """The classifier followed by softmax: what ``predict`` writes and a consumer wants.

    Bounded outputs also make one absolute tolerance meaningful for every model."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(x).softmax(dim=-1)


class Served(nn.Module):
    """Raw inputs prepared as ``predict`` prepares them, then the classifier's probabilities:
    the exported graph."""

    def __init__(self, prepare: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.prepare, self.probabilities = prepare, Probabilities(classifier)

    def forward(self, raw: Any) -> Tensor:
        return self.probabilities(self.prepare(raw))


class RawInputs(Protocol):
    """What an export knows of the raw inputs (``export_table.TableExport``,
    ``export_image.ImageExport``); a data module's ``raw_inputs()`` gives it."""

    input_names: list[str]  # the ONNX graph's inputs
    module: nn.Module  # raw inputs -> the model's input, as predict prepares it

    def example(self) -> Any: ...
    def dynamic_shapes(self) -> Any: ...
    def with_probes(self, inputs: list) -> list: ...  # inputs plus edge cases made of them
    def feeds(self, inputs: list) -> list[tuple[list[int], Any, Any]]: ...
    def finish_onnx(self, model: Any) -> Any: ...
    def describe(self) -> dict[str, Any]: ...


@dataclass
class Parity:
    """One exported model against PyTorch on the same validation samples."""

    samples: int
    max_abs_diff: float  # largest difference of any class probability
    argmax_agreement: float  # share of samples with the same predicted class
    atol: float
    passed: bool

    def line(self, name: str) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{name}: max |p - p_torch| {self.max_abs_diff:.2e} (atol {self.atol:g}), "
            f"argmax agreement {self.argmax_agreement:.2%} on {self.samples} samples: {verdict}"
        )


def compare(reference: np.ndarray, exported: np.ndarray, atol: float = ATOL) -> Parity:
    """Passes when every probability is within ``atol`` and every predicted class agrees,
    except between classes that PyTorch itself ranks within ``2 * atol`` (a tie that no
    tolerance could settle)."""
    diff = float(np.abs(exported - reference).max()) if reference.size else 0.0
    agree = exported.argmax(axis=1) == reference.argmax(axis=1)
    top = np.sort(reference, axis=1)
    ties = top[:, -1] - top[:, -2] <= 2 * atol
    passed = diff <= atol and bool((agree | ties).all())
    return Parity(len(reference), diff, float(agree.mean()), atol, passed)


def predicted(module: nn.Module, batch: Tensor) -> np.ndarray:
    """``predict``'s probabilities for inputs it has converted."""
    with torch.no_grad():
        return module(batch).numpy()


def run_feeds(predict: Callable[[Any], Any], feeds: Sequence, shape: tuple[int, int]) -> np.ndarray:
    """An exported model's probabilities, ``shape`` (inputs, classes), batch by batch (each
    size of image its own batch; a batch of one proves the dynamic batch dimension too)."""
    out = np.empty(shape, np.float32)
    with torch.no_grad():
        for rows, *feed in feeds:
            out[rows] = predict(feed)
    return out


def onnx_predictor(path: Path) -> Callable[[Any], np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda feed: session.run(None, feed[0])[0]


def program_predictor(path: Path) -> Callable[[Any], np.ndarray]:
    program = torch.export.load(path).module()
    return lambda feed: program(feed[1]).numpy()


def export_onnx(module: nn.Module, raw: RawInputs, path: Path) -> None:
    program = torch.onnx.export(
        module, (), kwargs={"raw": raw.example()}, dynamo=True, input_names=raw.input_names,
        output_names=[OUTPUT], dynamic_shapes={"raw": raw.dynamic_shapes()}, verbose=False,
    )  # fmt: skip
    import onnx

    # One file, weights inline: protobuf's 2 GB bound is far above these networks.
    onnx.save(raw.finish_onnx(program.model_proto), path)


def export_program(module: nn.Module, raw: RawInputs, path: Path) -> None:
    # Positional, so a consumer calls ``program.module()(inputs)``; the ONNX exporter reads a
    # trailing dict among the positional arguments as keywords, hence ``kwargs`` there.
    dynamic = {"raw": raw.dynamic_shapes()}
    program = torch.export.export(module, (raw.example(),), dynamic_shapes=dynamic)
    torch.export.save(program, path)


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation by onnxruntime: weights stored as int8, activations
    quantised at run time, so no calibration data is needed. onnxruntime's pre-processing
    (shape inference, graph optimisation) first, as its quantiser asks."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / source.name
        quant_pre_process(source, prepared)
        quantize_dynamic(prepared, target, weight_type=QuantType.QInt8)


def describe_inputs(state: dict[str, Any], raw: RawInputs, offsets: list[float]) -> dict:
    """What a consumer needs to feed the files and read their outputs: each raw input, the
    classes and the decision offsets."""
    output = {"name": OUTPUT, "dtype": "float32", "shape": ["batch", len(state["class_names"])]}
    decision = {
        "label": "class_names[argmax(log(probabilities) + offsets)], as predict and serve name it",
        "offsets": offsets,
    }
    return {
        "inputs": raw.describe(), "output": output, "class_names": state["class_names"],
        "decision": decision,
    }  # fmt: skip


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == labels).mean())


def export(
    classifier: nn.Module,
    state: dict[str, Any],
    raw: RawInputs,
    validation: tuple[list, np.ndarray],
    convert: Callable[[list], tuple[Tensor, Any]],
    out_dir: Path,
    checkpoint: str | Path,
    quantize: bool = False,
    atol: float = ATOL,
) -> dict[str, Any]:
    """Writes ``model.onnx``, ``model.pt2``, ``inputs.json``, optionally ``model.int8.onnx``,
    and ``parity.json``; raises ParityError (after writing them) when an export disagrees.

    ``validation``: raw validation inputs as ``serve`` takes them and their class codes;
    ``convert``: what ``predict`` and ``serve`` make of raw inputs (the reference)."""
    inputs, labels = validation
    if not inputs:
        raise ValueError("export checks its files on validation samples: the split is empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    served = Served(raw.module, classifier).cpu().eval()
    inputs = raw.with_probes(inputs)
    reference = predicted(served.probabilities, convert(inputs)[0])
    feeds = raw.feeds(inputs)

    onnx_path, program_path = out_dir / "model.onnx", out_dir / "model.pt2"
    export_onnx(served, raw, onnx_path)
    export_program(served, raw, program_path)
    results = {
        name: compare(reference, run_feeds(predictor(path), feeds, reference.shape), atol)
        for name, predictor, path in (
            ("onnx", onnx_predictor, onnx_path),
            ("pt2", program_predictor, program_path),
        )
    }
    offsets = classifier.decision_offsets.tolist()
    inputs_json = describe_inputs(state, raw, offsets)
    (out_dir / "inputs.json").write_text(json.dumps(inputs_json, indent=2) + "\n")
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "files": {"onnx": onnx_path.name, "pt2": program_path.name},
        "inputs": {"split": "val", "samples": len(labels), "probes": len(inputs) - len(labels)},
        **{name: asdict(parity) for name, parity in results.items()},
    }
    lines = [parity.line(name) for name, parity in results.items()]
    if quantize:
        int8_path = out_dir / "model.int8.onnx"
        quantize_int8(onnx_path, int8_path)
        int8 = run_feeds(onnx_predictor(int8_path), feeds, reference.shape)[: len(labels)]
        report["int8"] = int8_report(reference[: len(labels)], int8, labels, onnx_path, int8_path)
        q = report["int8"]
        lines.append(
            f"int8: validation accuracy {q['float_accuracy']:.4f} -> {q['int8_accuracy']:.4f} "
            f"({q['accuracy_change']:+.4f}), {q['float_bytes']:,} -> {q['int8_bytes']:,} bytes "
            f"({q['size_reduction']:.0%} smaller)"
        )
    (out_dir / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    written = sorted(path.name for path in out_dir.iterdir())
    print("\n".join([*lines, f"Exported to {out_dir}: {', '.join(written)}"]))
    failed = [name for name, parity in results.items() if not parity.passed]
    if failed:
        raise ParityError(
            f"Parity check failed ({', '.join(failed)}): probabilities differ from predict's "
            f"beyond atol {atol:g} on raw validation inputs (see {out_dir / 'parity.json'}). "
            "The files are kept for inspection; do not ship them."
        )
    return report


def int8_report(
    reference: np.ndarray, int8: np.ndarray, labels: np.ndarray, float_path: Path, int8_path: Path
) -> dict[str, Any]:
    sizes = float_path.stat().st_size, int8_path.stat().st_size
    return {
        "file": int8_path.name,
        "float_accuracy": accuracy(reference, labels),
        "int8_accuracy": accuracy(int8, labels),
        "accuracy_change": accuracy(int8, labels) - accuracy(reference, labels),
        "argmax_agreement": float((int8.argmax(axis=1) == reference.argmax(axis=1)).mean()),
        "max_abs_diff": float(np.abs(int8 - reference).max()),
        "float_bytes": sizes[0],
        "int8_bytes": sizes[1],
        "size_reduction": 1 - sizes[1] / sizes[0],
    }
