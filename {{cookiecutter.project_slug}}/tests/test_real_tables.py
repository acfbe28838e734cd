"""The table checks on real public tables that packages ship (ISLP's, vega_datasets' and
palmerpenguins' CSV files): each check fires where the data has what it looks for and stays
quiet where it hasn't. Skipped where those packages aren't installed; their data is all the
tests need, so ``pip install --no-deps ISLP vega_datasets palmerpenguins`` is enough (the
template's own test run does that)."""

from __future__ import annotations

import csv
import importlib.util
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.data.findings import Finding
from {{ cookiecutter.package_name }}.data.table_checks import TableRules
from {{ cookiecutter.package_name }}.data.tabular import TabularDataModule

from .conftest import NO_LOGGER, newest_output, run

SERIOUS = ("warning", "error")


def shipped(package: str, *parts: str) -> Path:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (pip install --no-deps {package})")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def findings(path: Path, target: str, **options) -> tuple[TabularDataModule, dict]:
    """The data module and its warnings and errors by check (the leak check reports only:
    the market tables hold today's return beside today's direction)."""
    datamodule = TabularDataModule(
        path=path, target=target, rules=TableRules(label_leak="keep"), **options
    )
    by_check: dict[str, list[Finding]] = defaultdict(list)
    for finding in datamodule.prepared.findings:
        if finding.severity in SERIOUS:
            by_check[finding.check].append(finding)
    return datamodule, by_check


def test_a_customer_table_of_coded_attributes() -> None:
    """Caravan: 5,822 customers, 85 coarse codes and counts, 6 % buyers."""
    datamodule, found = findings(shipped("ISLP", "data", "Caravan.csv"), "Purchase")
    assert set(found) == {"duplicate_across_splits", "label_conflict", "class_imbalance"}
    (copies,) = found["duplicate_across_splits"]  # one line, kept: twins are natural here
    assert copies.subject == "dataset" and "so they are kept" in copies.message
    assert len(datamodule.prepared.ids) == 5822  # nothing dropped
    assert found["class_imbalance"][0].action == "keep"
    hints = [f for f in datamodule.prepared.findings if f.check == "nominal_codes"]
    assert [f.subject for f in hints] == ["MOSTYPE"]  # the customer type, not the 10-level bins


def test_market_directions_by_year() -> None:
    """Smarket: daily market directions, 2001-2005; ``Today`` is the day's return."""
    path = shipped("ISLP", "data", "Smarket.csv")
    _, found = findings(path, "Direction")
    assert set(found) == {"timestamp_column", "label_leak"}
    assert [f.subject for f in found["timestamp_column"]] == ["Year"]
    assert [f.subject for f in found["label_leak"]] == ["Today"]

    datamodule, found = findings(path, "Direction", time_column="Year")
    assert set(found) == {"label_leak"}  # no label_shift: up and down days stay balanced
    data, year = datamodule.prepared, pd.read_csv(path)["Year"]
    years = {s: {year[int(i)] for i, t in zip(data.ids, data.splits, strict=True) if t == s}
             for s in ("train", "val", "test")}  # fmt: skip
    assert years == {"train": {2001, 2002, 2003}, "val": {2004}, "test": {2005}}


def test_weather_labels_that_changed_over_the_years() -> None:
    """Seattle's daily weather 2012-2015: 'rain' on 191 days of the first year, 3 of the last."""
    _, found = findings(shipped("vega_datasets", "_data", "seattle-weather.csv"), "weather")
    assert set(found) == {"timestamp_column", "label_shift", "class_imbalance"}
    assert "(total variation 0.56)" in found["label_shift"][0].message


def test_penguins_by_year_are_quiet_but_for_their_gaps() -> None:
    """Palmer penguins 2007-2009: a year column, missing measurements, no label shift."""
    _, found = findings(shipped("palmerpenguins", "data", "penguins.csv"), "species")
    assert set(found) == {"junk_values", "missing_values", "timestamp_column"}
    assert {f.subject for f in found["timestamp_column"]} == {"year"}


def test_an_export_of_penguins_takes_the_csv_columns_as_pandas_reads_them(tmp_path) -> None:
    """The exported model fed the file's own columns (pandas' NaN for "NA", the words as they
    are) gives predict's probabilities for the same file: gaps and categories in the graph."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnxruntime as ort

    path = shipped("palmerpenguins", "data", "penguins.csv")
    options = [f"--data.path={path}", "--data.target=species"]
    fitted = run("fit", tmp_path, *NO_LOGGER, *options, "--trainer.max_epochs=1")
    checkpoint = fitted.run_dir / "checkpoints" / "last.ckpt"
    config = fitted.run_dir / "config.yaml"
    run("predict", tmp_path, *NO_LOGGER, f"--ckpt_path={checkpoint}", f"--data.predict_path={path}",
        "--trainer.limit_predict_batches=1.0", config=config)  # fmt: skip
    run("export", tmp_path, *NO_LOGGER, f"--ckpt_path={checkpoint}", config=config)
    names = fitted.datamodule.class_names
    with newest_output(fitted.run_dir, "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    predicted = np.array([[float(row[name]) for name in names] for row in rows])

    # Cells as written: "NA" is a number's gap, but a category where training kept it as one.
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table = table.iloc[[int(row["id"]) for row in rows]]
    session = ort.InferenceSession(str(fitted.run_dir / "export" / "model.onnx"))
    feed = {}
    for given in session.get_inputs():
        column = table[given.name]
        if given.type == "tensor(string)":
            feed[given.name] = column.to_numpy(object)
        else:
            feed[given.name] = pd.to_numeric(column, errors="coerce").to_numpy(np.float32)
    assert {"island", "sex"} <= {g.name for g in session.get_inputs() if g.type == "tensor(string)"}
    assert np.isnan(feed["bill_length_mm"]).any() and len(table) == 344  # real gaps, every row
    (marker,) = [f for f in fitted.datamodule.prepared.findings if f.check == "missing_marker"]
    assert marker.subject == "sex" and "['NA']" in marker.message  # and said so
    got = session.run(None, feed)[0]
    assert np.abs(got - predicted).max() <= 1e-4
