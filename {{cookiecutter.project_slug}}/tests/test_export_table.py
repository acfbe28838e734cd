"""An exported table model fed as a consumer would feed it: one raw value per column (the
number, NaN for missing; the category's string, one never seen included), straight from a
file's rows, against what ``predict`` makes of the same file."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from .conftest import NO_LOGGER, newest_output, run  # noqa: E402

CLASSES = ["no", "yes"]


def mixed_table(rows: int, seed: int) -> pd.DataFrame:
    """Every column kind, as a spreadsheet writes it: numbers with thousands separators and
    gaps, words, a coded category, TRUE/FALSE, ISO dates."""
    rng = np.random.default_rng(seed)
    size = rng.normal(1500, 400, rows)
    colour = rng.choice(["red", "green", "blue"], rows)
    table = pd.DataFrame(
        {
            "size": [f"{v:,.2f}" if i % 9 else "" for i, v in enumerate(size)],
            "colour": colour,
            "grade": rng.choice([3, 4, 5], rows),
            "smoker": rng.choice(["TRUE", "FALSE"], rows),
            "seen": pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 900, rows), "D"),
        }
    )
    table["seen"] = table["seen"].dt.strftime("%Y-%m-%d")
    table["label"] = np.where((colour == "red") ^ (size > 1500), "yes", "no")
    return table


def consumer_feed(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """What a consumer holds for these rows, by hand: no project code."""

    def number(cell: str) -> float:
        return float(cell.replace(",", "")) if cell else np.nan

    seconds = [pd.Timestamp(d, tz="UTC").timestamp() if d else np.nan for d in rows["seen"]]
    return {
        "size": np.array([number(c) for c in rows["size"]], np.float32),
        "colour": rows["colour"].fillna("").to_numpy(object),
        "grade": rows["grade"].astype(str).to_numpy(object),
        "smoker": rows["smoker"].map({"TRUE": 1.0, "FALSE": 0.0}).to_numpy(np.float32),
        "seen": np.array(seconds, np.float32),
    }


@pytest.fixture(scope="module")
def exported_mixed(tmp_path_factory: pytest.TempPathFactory):
    """A short fit on a table of every column kind, exported, and predict's probabilities for
    new rows with gaps in every column and categories never seen in training."""
    root = tmp_path_factory.mktemp("mixed")
    data = root / "train.csv"
    mixed_table(240, seed=0).to_csv(data, index=False)
    options = [f"--data.path={data}", "--data.target=label", "--data.categorical=[grade]"]
    fitted = run("fit", root / "runs", *NO_LOGGER, *options)
    state = fitted.datamodule.state
    assert state["categorical"].keys() == {"colour", "grade"}  # every kind is here
    assert state["booleans"] == ["smoker"] and state["dates"] == ["seen"]

    new = mixed_table(12, seed=1).drop(columns="label").astype(str)
    new.loc[0, "colour"], new.loc[1, "grade"] = "purple", "7"  # never seen in training
    for i, name in enumerate(new.columns):
        new.loc[2 + i, name] = ""  # one gap per column
    new_path = root / "new.csv"
    new.to_csv(new_path, index=False)
    checkpoint = fitted.run_dir / "checkpoints" / "last.ckpt"
    config = fitted.run_dir / "config.yaml"
    run("predict", root, *NO_LOGGER, f"--ckpt_path={checkpoint}",
        f"--data.predict_path={new_path}", config=config)  # fmt: skip
    with newest_output(fitted.run_dir, "predictions.csv").open() as file:
        predicted = np.array([[float(r[c]) for c in CLASSES] for r in csv.DictReader(file)])
    copy = shutil.copy(checkpoint, root / "elsewhere.ckpt")
    run("export", root / "exports", *NO_LOGGER, f"--ckpt_path={copy}", "--quantize=true",
        config=config)  # fmt: skip
    (out,) = (root / "exports").glob("*/export")
    raw = pd.read_csv(new_path, dtype=str, keep_default_na=False)
    return out, raw, predicted


def test_onnx_takes_raw_columns_and_matches_predict(exported_mixed) -> None:
    out, raw, predicted = exported_mixed
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, consumer_feed(raw))[0]
    assert got.shape == predicted.shape == (12, 2)
    assert np.abs(got - predicted).max() <= 1e-4
    for i in range(len(raw)):  # one row at a time as well
        one = session.run(None, {k: v[i : i + 1] for k, v in consumer_feed(raw).items()})[0]
        assert np.abs(one[0] - predicted[i]).max() <= 1e-4


def test_pt2_takes_category_codes_from_inputs_json(exported_mixed) -> None:
    out, raw, predicted = exported_mixed
    described = json.loads((out / "inputs.json").read_text())["inputs"]
    feed = {}
    for name, values in consumer_feed(raw).items():
        if "vocabulary" in described[name]:
            vocabulary = described[name]["vocabulary"]
            codes = [vocabulary.index(v) if v in vocabulary else -1 for v in values]
            feed[name] = torch.tensor(codes, dtype=torch.int64)
        else:
            feed[name] = torch.from_numpy(values)
    program = torch.export.load(out / "model.pt2").module()
    with torch.no_grad():
        got = program(feed).numpy()
    assert np.abs(got - predicted).max() <= 1e-4


def test_the_export_checked_gaps_and_unseen_categories(exported_mixed) -> None:
    out, _, _ = exported_mixed
    parity = json.loads((out / "parity.json").read_text())
    assert parity["inputs"]["probes"] == 5 + 2  # a gap in each column, an unseen category each
    assert parity["onnx"]["passed"] and parity["pt2"]["passed"]
    assert (out / "model.int8.onnx").is_file() and parity["int8"]["int8_bytes"] > 0  # quantised
