"""The export subcommand: ONNX and torch.export files that take raw inputs, match predict on
raw validation inputs, take any batch size, carry their input description, and fail loudly
otherwise. Each task's own file feeds them as a consumer would (test_export_<task>.py)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")  # torch.onnx's dynamo exporter translates through it

from {{ cookiecutter.package_name }} import export as exporter  # noqa: E402
from {{ cookiecutter.package_name }}.cli import ProjectCLI  # noqa: E402

from .conftest import NO_LOGGER, PROJECT, run  # noqa: E402


def best_checkpoint(fitted: ProjectCLI) -> str:
    return fitted.trainer.checkpoint_callback.best_model_path


@pytest.fixture(scope="module")
def exported(fitted: ProjectCLI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared fit exported (with int8) as the README says: its own config and checkpoint."""
    config = fitted.run_dir / "config.yaml"
    root = tmp_path_factory.mktemp("elsewhere")
    args = [*NO_LOGGER, f"--ckpt_path={best_checkpoint(fitted)}", "--quantize=true"]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        cli = run("export", root, *args, config=config)
    assert cli.run_dir == fitted.run_dir and not list(root.iterdir())  # into the fit's run
    files = "inputs.json, model.int8.onnx, model.onnx, model.pt2, parity.json"
    assert f"Exported to {fitted.run_dir / 'export'}: {files}" in printed.getvalue()
    return fitted.run_dir / "export"


@pytest.fixture(scope="module")
def reference(fitted: ProjectCLI) -> tuple[torch.nn.Module, list, list, np.ndarray]:
    """The checkpoint's model loaded independently of export, raw validation inputs as serve
    takes them, the exported files' inputs for them, and what predict makes of them."""
    model = type(fitted.model).load_from_checkpoint(best_checkpoint(fitted), map_location="cpu")
    datamodule = fitted.datamodule
    inputs, _ = datamodule.validation_inputs(64)
    feeds = datamodule.raw_inputs().feeds(inputs)
    return model.eval(), inputs, feeds, probabilities(model, datamodule.convert_inputs(inputs)[0])


def probabilities(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).softmax(dim=-1).numpy()


def onnx_run(path: Path, feed: dict) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def first(feed, count: int):
    """The first ``count`` rows of a feed: a dict of arrays (or tensors) or one tensor."""
    if isinstance(feed, dict):
        return {name: values[:count] for name, values in feed.items()}
    return feed[:count]


def test_export_writes_every_file_and_reports_parity(exported: Path, fitted) -> None:
    names = {"model.onnx", "model.pt2", "model.int8.onnx", "inputs.json", "parity.json"}
    assert {p.name for p in exported.iterdir()} == names
    parity = json.loads((exported / "parity.json").read_text())
    seen = min(len(fitted.datamodule.dataset("val")), 256)  # export's default samples
    probes = parity["inputs"]["probes"]
    assert parity["inputs"]["samples"] == seen and probes > 0
    for name in ("onnx", "pt2"):
        assert parity[name]["passed"] and parity[name]["samples"] == seen + probes
        assert parity[name]["max_abs_diff"] <= parity[name]["atol"] == exporter.ATOL
        assert parity[name]["argmax_agreement"] == 1.0


def test_onnx_takes_raw_inputs_and_matches_predict(exported: Path, reference, fitted) -> None:
    _, _, feeds, expected = reference
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    given = {i.name: i.type for i in session.get_inputs()}
    if hasattr(fitted.datamodule, "feature_names"):  # a table: one input per raw column
        state = fitted.datamodule.state
        assert list(given) == state["columns"]
        for name in state["columns"]:
            kind = "tensor(string)" if name in state["categorical"] else "tensor(float)"
            assert given[name] == kind
    else:  # an image: decoded RGB pixels
        assert given == {"pixels": "tensor(uint8)"}
        assert [str(d) for d in session.get_inputs()[0].shape[1:]] == ["3", "height", "width"]
    for rows, feed, _ in feeds:
        got = onnx_run(exported / "model.onnx", feed)
        assert np.abs(got - expected[rows]).max() <= exporter.ATOL
        assert (got.argmax(axis=1) == expected[rows].argmax(axis=1)).all()


@pytest.mark.parametrize("batch_size", [1, 3])
def test_onnx_takes_any_batch_size(exported: Path, reference, batch_size: int) -> None:
    model, _, feeds, expected = reference
    rows, feed, _ = feeds[0]
    got = onnx_run(exported / "model.onnx", first(feed, batch_size))
    assert got.shape == (batch_size, model.hparams.num_classes)
    assert np.abs(got - expected[rows[:batch_size]]).max() <= exporter.ATOL


def test_torch_export_program_reloads_and_matches(exported: Path, reference) -> None:
    _, _, feeds, expected = reference
    program = torch.export.load(exported / "model.pt2").module()
    rows, _, given = feeds[0]
    for count in (len(rows), 5):  # the batch dimension is dynamic here too
        with torch.no_grad():
            got = program(first(given, count)).numpy()
        assert np.abs(got - expected[rows[:count]]).max() <= exporter.ATOL


def test_inputs_json_describes_the_inputs_and_the_classes(exported: Path, fitted) -> None:
    described = json.loads((exported / "inputs.json").read_text())
    datamodule = fitted.datamodule
    assert described["class_names"] == datamodule.class_names
    assert described["output"]["shape"] == ["batch", len(datamodule.class_names)]
    assert described["decision"]["offsets"] == fitted.model.decision_offsets.tolist()
    assert "argmax(log(probabilities) + offsets)" in described["decision"]["label"]
    given = described["inputs"]
    if hasattr(datamodule, "feature_names"):
        state = datamodule.state
        assert list(given) == state["columns"]
        for name, vocabulary in state["categorical"].items():
            assert given[name]["vocabulary"] == vocabulary
        for name in state["numeric"]:
            assert repr(state["numeric"][name]) in given[name]["values"]  # the median
    else:
        assert given["pixels"]["dtype"] == "uint8"
        assert given["pixels"]["shape"] == ["batch", 3, "height", "width"]


def test_quantised_model_is_smaller_and_its_accuracy_change_is_reported(
    exported: Path, fitted
) -> None:
    report = json.loads((exported / "parity.json").read_text())["int8"]
    int8, float32 = exported / "model.int8.onnx", exported / "model.onnx"
    sizes = int8.stat().st_size, float32.stat().st_size
    assert report["int8_bytes"] == sizes[0] < sizes[1] == report["float_bytes"]
    assert report["size_reduction"] == pytest.approx(1 - sizes[0] / sizes[1])
    # The reported accuracies are those of these files on the same validation samples.
    inputs, labels = fitted.datamodule.validation_inputs(256)
    feeds = fitted.datamodule.raw_inputs().feeds(inputs)
    accuracies = []
    for path in (float32, int8):
        predicted = np.empty(len(inputs), dtype=np.int64)
        for rows, feed, _ in feeds:
            predicted[rows] = onnx_run(path, feed).argmax(axis=1)
        accuracies.append(float((predicted == labels).mean()))
    assert report["float_accuracy"] == pytest.approx(accuracies[0])
    assert report["int8_accuracy"] == pytest.approx(accuracies[1])
    assert report["accuracy_change"] == pytest.approx(accuracies[1] - accuracies[0])


def test_the_readme_example_runs_as_written(
    exported: Path, fitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    section = (PROJECT / "README.md").read_text().split("### Using the export")[1]
    code = section.split("```python")[1].split("```")[0].replace("runs/NAME/export", str(exported))
    monkeypatch.chdir(tmp_path)
    if not hasattr(fitted.datamodule, "feature_names"):  # the image it opens
        from PIL import Image

        pixels = fitted.datamodule.dataset("val").pixels([0])[0]
        Image.fromarray(pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0)).save("a.jpg")
    namespace: dict = {}
    exec(code, namespace)
    probabilities = namespace["probabilities"]
    assert probabilities.shape == (1, len(fitted.datamodule.class_names))
    assert probabilities.sum() == pytest.approx(1, abs=1e-5)


def test_export_without_a_checkpoint_fails_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"export needs --ckpt_path"):
        run("export", tmp_path, *NO_LOGGER)
    assert not list(tmp_path.iterdir())


def test_missing_export_packages_are_named_before_any_work(
    fitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporter, "PACKAGES", (*exporter.PACKAGES, "no_such_runtime"))
    checkpoint = shutil.copy(best_checkpoint(fitted), tmp_path / "copy.ckpt")
    with pytest.raises(ModuleNotFoundError, match=r"needs no_such_runtime: pip install"):
        run("export", tmp_path, *NO_LOGGER, f"--ckpt_path={checkpoint}")
    assert not list(tmp_path.glob("*/export"))


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": torch.nn.Linear(3, 2).state_dict()}, other)
    with pytest.raises(ValueError, match=r"not saved with \w+DataModule.*another model or task"):
        run("export", tmp_path, *NO_LOGGER, f"--ckpt_path={other}")
    assert not list(tmp_path.glob("*/export"))


def test_a_perturbed_onnx_file_fails_the_parity_check(
    fitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The check can fail: one weight of the written ONNX file changed, the export refused."""
    write = exporter.export_onnx

    def perturbed(module, raw, path) -> None:
        write(module, raw, path)
        model = onnx.load(path)
        weight = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
        values = onnx.numpy_helper.to_array(weight)
        weight.CopyFrom(onnx.numpy_helper.from_array(values * 1.5 + 0.1, weight.name))
        onnx.save(model, path)

    monkeypatch.setattr(exporter, "export_onnx", perturbed)
    checkpoint = shutil.copy(best_checkpoint(fitted), tmp_path / "copy.ckpt")  # outside the run
    with pytest.raises(exporter.ParityError, match=r"failed \(onnx\).*do not ship"):
        run("export", tmp_path, *NO_LOGGER, f"--ckpt_path={checkpoint}")
    printed = capsys.readouterr().out
    assert "onnx: max |p - p_torch|" in printed and "FAILED" in printed
    (out,) = tmp_path.glob("*-export/export")
    parity = json.loads((out / "parity.json").read_text())
    assert not parity["onnx"]["passed"] and parity["onnx"]["max_abs_diff"] > exporter.ATOL
    assert parity["pt2"]["passed"]  # the files stay for inspection, the good one too
    assert (out / "model.onnx").is_file() and (out / "model.pt2").is_file()


def test_parity_tolerates_ties_only() -> None:
    reference = np.array([[0.5, 0.5], [0.9, 0.1]], dtype=np.float32)
    tied = np.array([[0.50001, 0.49999], [0.9, 0.1]], dtype=np.float32)
    assert exporter.compare(reference, tied).passed  # within atol, a tie PyTorch can't settle
    off = reference + np.array([[0, 0], [-2e-4, 2e-4]], dtype=np.float32)
    result = exporter.compare(reference, off)
    assert not result.passed and result.max_abs_diff == pytest.approx(2e-4, rel=1e-3)
