"""Export a trained classifier for serving without this package: an ONNX model (torch.onnx's
dynamo exporter, run by onnxruntime) and a ``torch.export`` program (``.pt2``). Both take the
model's raw input (decoded ``uint8`` pixels, or encoded feature rows) because the
preprocessing travels inside, both accept any batch size, and neither ships before it matches
PyTorch on real validation samples."""

from __future__ import annotations

import importlib.util
import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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


def validation_batches(loader: Iterable, limit: int | float) -> list[tuple[Tensor, Tensor]]:
    """The first (input, label) batches of the validation loader, as many as ``limit``
    allows (a count, or a fraction as in ``--trainer.limit_val_batches``)."""
    count = limit if isinstance(limit, int) else max(1, round(len(loader) * limit))
    batches = []
    for batch in loader:  # (x, y) or (x, y, group)
        if len(batches) == count:
            break
        batches.append((batch[0].cpu(), batch[1].cpu()))
    if not batches:
        raise ValueError(
            "export checks its files on validation samples: the validation split is empty "
            "or --trainer.limit_val_batches is 0."
        )
    return batches


def run_batches(predict: Callable[[Tensor], Any], batches: list) -> np.ndarray:
    """Probabilities for every batch; the last one is usually smaller, which also proves
    the dynamic batch dimension."""
    with torch.no_grad():
        return np.concatenate([np.asarray(predict(x), dtype=np.float32) for x, _ in batches])


def onnx_predictor(path: Path) -> Callable[[Tensor], np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


def export_onnx(module: nn.Module, example: Tensor, path: Path, input_name: str) -> None:
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        module, (example,), dynamo=True, input_names=[input_name], output_names=[OUTPUT],
        dynamic_shapes={"x": {0: batch}}, verbose=False,
    )  # fmt: skip
    program.save(str(path))  # one file: weights inline unless they pass protobuf's 2 GB


def export_program(module: nn.Module, example: Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes={"x": {0: batch}})
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


def describe_inputs(
    state: dict[str, Any], input_name: str, dtype: torch.dtype, offsets: list[float]
) -> dict:
    """What a consumer needs to build inputs and read outputs, from the fitted data state
    and the model's decision offsets."""
    shape = state["input_shape"]
    described: dict[str, Any] = {
        "name": input_name, "dtype": str(dtype).removeprefix("torch."), "shape": ["batch", *shape]
    }  # fmt: skip
    if "feature_names" in state:  # a table: encode() turns rows into these features
        described |= {
            "feature_names": state["feature_names"],
            "encoding": "numbers as they are (dates as seconds since 1970; booleans as 1 and "
            "0; missing: the training median); categories one-hot over the training "
            "vocabulary, anything else or missing in the '<unknown>' slot",
            "columns": state["columns"],
            "medians": state["numeric"],
            "categories": state["categorical"],
            "dates": state["dates"],
            "booleans": state.get("booleans", []),
        }
    else:
        channels, height, width = shape
        described |= {
            "layout": "NCHW", "channels": channels, "height": height, "width": width,
            "mode": {1: "L", 3: "RGB"}[channels],
            "values": "decoded pixels 0-255, resized (bilinear) to height x width; the "
            "model scales and standardises them",
        }  # fmt: skip
    output = {"name": OUTPUT, "dtype": "float32", "shape": ["batch", len(state["class_names"])]}
    decision = {
        "label": "class_names[argmax(log(probabilities) + offsets)], as predict and serve name it",
        "offsets": offsets,
    }
    return {
        "input": described, "output": output, "class_names": state["class_names"],
        "decision": decision,
    }  # fmt: skip


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == labels).mean())


def export(
    classifier: nn.Module,
    state: dict[str, Any],
    batches: list[tuple[Tensor, Tensor]],
    out_dir: Path,
    checkpoint: str | Path,
    quantize: bool = False,
    atol: float = ATOL,
) -> dict[str, Any]:
    """Writes ``model.onnx``, ``model.pt2``, ``inputs.json``, optionally ``model.int8.onnx``,
    and ``parity.json``; raises ParityError (after writing them) when an export disagrees."""
    out_dir.mkdir(parents=True, exist_ok=True)
    module = Probabilities(classifier).cpu().eval()
    first = batches[0][0]
    # Two samples: torch.export would specialise a batch of one to the constant 1.
    example = first[:1].expand(2, *first.shape[1:]).contiguous()
    input_name = "features" if "feature_names" in state else "pixels"
    labels = np.concatenate([y.numpy() for _, y in batches])
    reference = run_batches(module, batches)

    onnx_path, program_path = out_dir / "model.onnx", out_dir / "model.pt2"
    export_onnx(module, example, onnx_path, input_name)
    export_program(module, example, program_path)
    program = torch.export.load(program_path).module()
    results = {
        "onnx": compare(reference, run_batches(onnx_predictor(onnx_path), batches), atol),
        "pt2": compare(reference, run_batches(program, batches), atol),
    }
    offsets = classifier.decision_offsets.tolist()
    inputs = describe_inputs(state, input_name, first.dtype, offsets)
    (out_dir / "inputs.json").write_text(json.dumps(inputs, indent=2) + "\n")
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "files": {"onnx": onnx_path.name, "pt2": program_path.name},
        "split": "val",
        **{name: asdict(parity) for name, parity in results.items()},
    }
    lines = [parity.line(name) for name, parity in results.items()]
    if quantize:
        int8_path = out_dir / "model.int8.onnx"
        quantize_int8(onnx_path, int8_path)
        int8 = run_batches(onnx_predictor(int8_path), batches)
        sizes = onnx_path.stat().st_size, int8_path.stat().st_size
        report["int8"] = {
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
        q = report["int8"]
        lines.append(
            f"int8: validation accuracy {q['float_accuracy']:.4f} -> {q['int8_accuracy']:.4f} "
            f"({q['accuracy_change']:+.4f}), {sizes[0]:,} -> {sizes[1]:,} bytes "
            f"({q['size_reduction']:.0%} smaller)"
        )
    (out_dir / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    written = sorted(path.name for path in out_dir.iterdir())
    print("\n".join([*lines, f"Exported to {out_dir}: {', '.join(written)}"]))
    failed = [name for name, parity in results.items() if not parity.passed]
    if failed:
        raise ParityError(
            f"Parity check failed ({', '.join(failed)}): probabilities differ from PyTorch's "
            f"beyond atol {atol:g} on validation samples (see {out_dir / 'parity.json'}). "
            "The files are kept for inspection; do not ship them."
        )
    return report
