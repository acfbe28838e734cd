"""An exported image model fed as a consumer would feed it: files of any size and colour,
decoded to RGB by Pillow and nothing else, against what ``predict`` makes of the same files;
and the in-graph conversion step by step against training's own."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import torch
from PIL import Image

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from {{ cookiecutter.package_name }}.data.image_decoding import to_pixels  # noqa: E402
from {{ cookiecutter.package_name }}.export_image import ImageInputs  # noqa: E402

from .conftest import NO_LOGGER, run  # noqa: E402


def inbox_of(fitted, folder: Path) -> list[Path]:
    """Validation images written at sizes the model never saw, larger and smaller, some in
    colour (a greyscale model turns them grey inside the graph), and the two real photos
    scikit-learn ships (427 x 640 JPEGs: a large antialiased shrink)."""
    folder.mkdir()
    photos = Path(sklearn.datasets.__file__).parent / "images"
    paths = [Path(shutil.copy(photo, folder)) for photo in sorted(photos.glob("*.jpg"))]
    assert len(paths) == 2
    val = fitted.datamodule.dataset("val")
    for i, pixels in enumerate(val.pixels(range(6))):
        grey = pixels[0] if len(pixels) == 1 else pixels.mean(axis=0).astype(np.uint8)
        colour = np.stack([grey, 255 - grey, grey // 2], axis=-1)
        image = Image.fromarray(colour if i % 2 else grey)
        size = [(37, 23), (5, 6), (64, 64), (9, 8), (8, 8), (120, 17)][i]
        paths.append(folder / f"{i}.png")
        image.resize(size, Image.Resampling.NEAREST).save(paths[-1])
    return paths


def test_onnx_takes_decoded_pixels_of_any_size_and_matches_predict(fitted, tmp_path: Path) -> None:
    paths = inbox_of(fitted, tmp_path / "inbox")
    checkpoint = shutil.copy(fitted.run_dir / "checkpoints" / "last.ckpt", tmp_path / "c.ckpt")
    config = fitted.run_dir / "config.yaml"
    run("predict", tmp_path / "runs", *NO_LOGGER, f"--ckpt_path={checkpoint}",
        f"--data.predict_root={paths[0].parent}", config=config)  # fmt: skip
    (written,) = (tmp_path / "runs").glob("*/predictions.csv")
    names = fitted.datamodule.class_names
    with written.open() as file:
        predicted = {r["id"]: [float(r[c]) for c in names] for r in csv.DictReader(file)}
    run("export", tmp_path / "exports", *NO_LOGGER, f"--ckpt_path={checkpoint}", config=config)
    (out,) = (tmp_path / "exports").glob("*/export")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    program = torch.export.load(out / "model.pt2").module()
    for path in paths:
        pixels = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)[None].copy()
        expected = np.array(predicted[path.name])
        got = session.run(None, {"pixels": pixels})[0][0]
        assert np.abs(got - expected).max() <= 1e-4, path.name
        with torch.no_grad():
            from_program = program(torch.from_numpy(pixels))[0].numpy()
        assert np.abs(from_program - expected).max() <= 1e-4, path.name


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(37, 23), (8, 8), (5, 6)])
def test_graph_converts_pixels_exactly_as_training_converts_files(channels, size) -> None:
    """Pillow's greyscale and the project's resize, bit for bit, in the module the graph
    is exported from."""
    rgb = np.random.default_rng(channels).integers(0, 256, (size[1], size[0], 3), np.uint8)
    trained = to_pixels(Image.fromarray(rgb), channels, (8, 8))
    graph = ImageInputs(channels, (8, 8))(torch.from_numpy(rgb.transpose(2, 0, 1))[None].clone())
    assert graph.dtype == torch.uint8 and np.array_equal(graph[0].numpy(), trained)
    if channels == 1:  # and at the model's size, where nothing is resized
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
        same = ImageInputs(1, rgb.shape[:2])(torch.from_numpy(rgb.transpose(2, 0, 1))[None].clone())
        assert np.array_equal(same[0, 0].numpy(), grey)


def test_onnxruntime_prepares_the_pixels_training_prepares(tmp_path: Path) -> None:
    """The conversion alone through the ONNX exporter and onnxruntime, at sizes that shrink
    and grow by whole and odd factors (whole factors make exact halves, which two runtimes'
    float sums once rounded differently in 0.3 % of the pixels): every pixel equal."""
    module = ImageInputs(1, (8, 8))
    dim = torch.export.Dim
    program = torch.onnx.export(
        module, (torch.zeros(2, 3, 9, 10, dtype=torch.uint8),), dynamo=True,
        input_names=["pixels"], verbose=False,
        dynamic_shapes={"pixels": {0: dim("b", min=1), 2: dim("h", min=1), 3: dim("w", min=1)}},
    )  # fmt: skip
    program.save(str(tmp_path / "inputs.onnx"))
    session = ort.InferenceSession(str(tmp_path / "inputs.onnx"))
    rng = np.random.default_rng(0)
    for height, width in [(7, 6), (4, 4), (16, 16), (12, 9), (64, 64), (45, 37), (8, 8)]:
        rgb = rng.integers(0, 256, (20, 3, height, width), dtype=np.uint8)
        images = [Image.fromarray(image.transpose(1, 2, 0)) for image in rgb]
        expected = np.stack([to_pixels(image, 1, (8, 8)) for image in images])
        assert np.array_equal(session.run(None, {"pixels": rgb})[0], expected), (height, width)
