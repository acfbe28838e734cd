"""Reading a user's table at its edges: spreadsheet exports, locales, encodings, odd cells.

Each file either reads as written or stops with a DataError naming the file, the row or
column, and what to do; never a raw traceback, never a silently changed value.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer

from {{ cookiecutter.package_name }}.data.findings import DataError
from {{ cookiecutter.package_name }}.data.table_reading import numbers, read_table
from {{ cookiecutter.package_name }}.data.tabular import TabularDataModule

from .conftest import NO_LOGGER, run


@pytest.fixture
def table() -> pd.DataFrame:
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.iloc[:, :4].copy()
    frame["diagnosis"] = bunch.target.map({0: "malignant", 1: "benign"})
    return frame


def module(path: Path, **kwargs) -> TabularDataModule:
    return TabularDataModule(path=path, target="diagnosis", profile=False, **kwargs)


def written(tmp_path: Path, table: pd.DataFrame, name: str = "t.csv", **options) -> Path:
    table.to_csv(tmp_path / name, index=False, **options)
    return tmp_path / name


def train_rows(datamodule: TabularDataModule) -> list[int]:
    data = datamodule.prepared
    return [int(i) for i, s in zip(data.ids, data.splits, strict=True) if s == "train"]


# --- numbers as spreadsheets write them ---------------------------------------------------
def test_numbers_with_thousands_separators_are_numbers(tmp_path: Path, table) -> None:
    area = table["mean area"] * 10  # 1,435.0 .. 25,010.0
    path = written(tmp_path, table.assign(area=[f"{v:,.1f}" for v in area]))
    datamodule = module(path)
    assert "area" in datamodule.state["numeric"]
    assert not [f for f in datamodule.prepared.findings if f.subject == "area"]
    rows = train_rows(datamodule)
    typed = datamodule.profile_table["area"]
    assert typed.tolist() == pytest.approx(area[rows].tolist(), rel=1e-12)
    assert datamodule.state["numeric"]["area"] == pytest.approx(area[rows].median())


def test_a_decimal_comma_is_refused_naming_the_column(tmp_path: Path, table) -> None:
    commas = [f"{v:.2f}".replace(".", ",") for v in table["mean radius"]]
    path = written(tmp_path, table.assign(radius=commas))
    where = r"t\.csv: column 'radius'.*decimal comma.*'17,99'.*rows 0, 1"
    with pytest.raises(DataError, match=where):
        _ = module(path).prepared


def test_dates_beyond_nanoseconds_are_dates(tmp_path: Path, table) -> None:
    """Database exports write 0001-01-01 and 9999-12-31 for "none" and "no end"."""
    days = pd.date_range("2000-01-01", periods=len(table), freq="D").strftime("%Y-%m-%d")
    ends = np.where(np.arange(len(table)) % 7 == 0, "9999-12-31", days)
    datamodule = module(written(tmp_path, table.assign(ends=ends)))
    assert datamodule.state["dates"] == ["ends"]
    assert datamodule.profile_table["ends"].max() == pd.Timestamp("9999-12-31").timestamp()


# --- numbers no float holds ---------------------------------------------------------------
@pytest.mark.parametrize("cell", ["inf", "-inf", "1e400", "-Infinity"])
def test_infinite_numbers_are_refused_naming_column_and_row(tmp_path, table, cell) -> None:
    column = table.columns[1]
    table = table.astype({column: object})
    table.loc[[7, 30], column] = cell
    path = written(tmp_path, table)
    where = rf"t\.csv: column '{re.escape(column)}'.*rows 7, 30.*{re.escape(repr(cell))}"
    with pytest.raises(DataError, match=where + r".*leave the cell empty"):
        _ = module(path).prepared


def test_infinite_numbers_in_rows_to_predict_are_refused(tmp_path: Path, table) -> None:
    new = table.drop(columns="diagnosis").head(5).astype(object)
    new.loc[3, "mean area"] = "inf"
    predict = written(tmp_path, new, "new.csv")
    datamodule = module(written(tmp_path, table), predict_path=predict)
    with pytest.raises(DataError, match=r"new\.csv: column 'mean area'.*row 3.*'inf'"):
        datamodule.read_predict_inputs()


# --- empty columns ------------------------------------------------------------------------
def test_missing_markers_among_categories_are_kept_and_named(tmp_path: Path, table) -> None:
    """A word like NA in a column of numbers is a gap; among words it may be a category
    (Ames' alley "NA": none), so it is kept as written, and said so."""
    words = np.resize(["red", "blue", "NA", "red", "?"], len(table))
    sizes = np.resize(["1.5", "NA", "2.5"], len(table))
    datamodule = module(written(tmp_path, table.assign(colour=words, size=sizes)))
    assert "NA" in datamodule.state["categorical"]["colour"]
    found = {(f.check, f.subject): f for f in datamodule.prepared.findings}
    marker = found[("missing_marker", "colour")]
    assert marker.severity == "info" and "['?', 'NA']" in marker.message
    assert "rows 2, 4" in marker.message
    assert ("junk_values", "size") in found and ("missing_marker", "size") not in found


def test_a_delimiter_ending_every_line_makes_no_column(tmp_path: Path, table) -> None:
    path = written(tmp_path, table)
    path.write_text("".join(f"{line},\n" for line in path.read_text().splitlines()))
    datamodule = module(path)
    assert datamodule.state["columns"] == list(table.columns[:4])
    [finding] = [f for f in datamodule.prepared.findings if f.check == "empty_column"]
    assert "column 6" in finding.message and "no name and no values" in finding.message


def test_an_empty_named_column_is_reported_and_dropped(tmp_path: Path, table) -> None:
    datamodule = module(written(tmp_path, table.assign(notes=np.nan)))
    [finding] = [f for f in datamodule.prepared.findings if f.subject == "notes"]
    assert "every value is missing" in finding.message and finding.action == "drop"
    assert datamodule.input_shape == [4]


def test_an_attribute_error_while_preparing_is_not_swallowed() -> None:
    """LightningCLI links num_classes through hasattr(), which reads an AttributeError as
    "no such attribute": the user saw a TypeError about missing arguments instead."""

    class Broken(TabularDataModule):
        def prepare(self):
            raise AttributeError("the real reason")

    with pytest.raises(RuntimeError, match="the real reason"):
        hasattr(Broken(), "num_classes")


# --- files as other programs write them ---------------------------------------------------
def test_a_file_in_another_encoding_is_named(tmp_path: Path, table) -> None:
    sites = np.resize(["Zürich", "Genève", "Malmö"], len(table))
    path = written(tmp_path, table.assign(site=sites), encoding="latin-1")
    with pytest.raises(DataError, match=r"t\.csv: line 2 is not utf-8 text.*encoding"):
        _ = module(path).prepared
    datamodule = module(path, encoding="latin-1")
    assert set(datamodule.state["categorical"]["site"]) == {"Zürich", "Genève", "Malmö"}


def test_semicolons_tabs_and_a_byte_order_mark_are_read(tmp_path: Path, table) -> None:
    comma = module(written(tmp_path, table)).state
    for name, options in {
        "semicolon.csv": {"sep": ";"},
        "tab.tsv": {"sep": "\t"},
        "bom.csv": {"encoding": "utf-8-sig"},
    }.items():
        state = module(written(tmp_path, table, name, **options)).state
        assert state["columns"] == comma["columns"], name
        assert state["numeric"] == comma["numeric"], name


def test_a_lone_column_of_joined_names_hints_at_the_delimiter(tmp_path: Path, table) -> None:
    path = written(tmp_path, table, sep=";")
    with pytest.raises(DataError, match=r"no target column.*Is ';' the file's delimiter"):
        _ = module(path, delimiter=",").prepared


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", r"the file is empty"),
        ("\n\n", r"the file is empty"),
        ("a,diagnosis\n", r"a header and no rows"),
        ("a,diagnosis\n1,x\n2,y,3\n", r"line 3 has 3 cells.*header names 2"),
        ('a,diagnosis\n1,"x\n', r"not a readable CSV table"),
    ],
)
def test_files_that_hold_no_table_are_named(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=r"t\.csv: " + problem):
        _ = module(path).prepared


# --- a class too small to split -----------------------------------------------------------
def test_a_class_with_one_row_is_named_by_its_label(tmp_path: Path, table) -> None:
    table.loc[0, "diagnosis"] = "rare"
    with pytest.raises(DataError, match=r"class 'rare' has 1 sample"):
        _ = module(written(tmp_path, table)).prepared


# --- duplicate column names ---------------------------------------------------------------
def test_duplicate_column_names_are_refused(tmp_path: Path, table) -> None:
    path = written(tmp_path, table)
    path.write_text(path.read_text().replace("mean texture", "mean radius", 1))
    with pytest.raises(DataError, match=r"t\.csv: column 'mean radius' is named twice.*1 and 2"):
        _ = module(path).prepared


# --- one reader for fit, profile, predict and serve ---------------------------------------
def test_fit_and_predict_read_a_spreadsheet_export_alike(tmp_path: Path, table) -> None:
    """A semicolon-separated cp1252 export with thousands separators, a trailing delimiter on
    every line and a bool column: fit trains on it, predict reads new rows of it the same way."""
    export = table.assign(
        area=[f"{v:,.1f}" for v in table["mean area"] * 10],
        site=np.resize(["Zürich", "Genève"], len(table)),
        smoker=np.resize(["TRUE", "FALSE", "FALSE"], len(table)),
    )
    data = tmp_path / "export.csv"
    data.write_bytes(export.to_csv(index=False, sep=";", lineterminator=";\n").encode("cp1252"))
    options = [f"--data.path={data}", "--data.target=diagnosis", "--data.encoding=cp1252"]
    fitted = run("fit", tmp_path / "runs", *NO_LOGGER, *options, "--trainer.max_epochs=1")
    state = fitted.datamodule.state
    assert state["columns"] == [*table.columns[:4], "area", "site", "smoker"]
    assert state["booleans"] == ["smoker"]

    new = tmp_path / "new.csv"
    rows = export.iloc[5:].reset_index(drop=True)
    new.write_bytes(rows.to_csv(index=False, sep=";", lineterminator=";\n").encode("cp1252"))
    checkpoint = fitted.run_dir / "checkpoints" / "last.ckpt"
    predicting = module(data, encoding="cp1252", predict_path=new, fitted_from=checkpoint)
    inputs, ids = predicting.read_predict_inputs()
    assert len(ids) == len(rows)
    prepared = fitted.datamodule.prepared
    for new_row, row in enumerate(rows.index[:20] + 5):
        position = prepared.ids.index(str(row))
        split = prepared.splits[position]
        within = sum(1 for s in prepared.splits[:position] if s == split)
        trained = prepared.datasets[split].tensors[0][within]
        assert torch.equal(inputs.tensors[0][new_row], trained), row


# --- serving reads JSON values by the fitted column kinds ---------------------------------
def test_json_values_are_read_by_the_fitted_column_kind(tmp_path: Path, table) -> None:
    table = table.assign(
        grade=np.resize([3, 4], len(table)),
        smoker=np.resize([True, False, False], len(table)),
        answered=np.resize(["yes", "no"], len(table)),
    )
    table.to_parquet(tmp_path / "t.parquet")
    datamodule = module(tmp_path / "t.parquet", categorical=["grade"])
    assert sorted(datamodule.state["categorical"]["grade"]) == ["3", "4"]
    row = table.drop(columns="diagnosis").iloc[0].to_dict()
    names = datamodule.feature_names
    as_json = row | {"grade": 3.0, "smoker": True, "mean area": 1001}
    x, _ = datamodule.convert_inputs([as_json, as_json | {"grade": "3", "smoker": "false"}])
    assert x[:, names.index("grade=3")].tolist() == [1.0, 1.0]
    assert x[:, names.index("smoker")].tolist() == [1.0, 0.0]
    assert x[0, names.index("mean area")] == 1001.0
    with pytest.raises(DataError, match=r"instance 0: column 'mean area' takes a finite number"):
        datamodule.convert_inputs([row | {"mean area": True}])


def test_json_true_meets_a_csv_column_of_lowercase_true_and_false(tmp_path: Path, table) -> None:
    table = table.assign(smoker=np.resize(["true", "false", "false"], len(table)))
    datamodule = module(written(tmp_path, table))
    row = table.drop(columns="diagnosis").iloc[0].to_dict()
    x, _ = datamodule.convert_inputs([row | {"smoker": True}, row | {"smoker": False}])
    assert x[:, datamodule.feature_names.index("smoker")].tolist() == [1.0, 0.0]


# --- any table: a correct reading or a DataError ------------------------------------------
NUMBER = st.floats(allow_nan=False, allow_infinity=False, width=64)
# Any text but control characters (line breaks among them) and U+FEFF, which at the start
# of a file is a byte order mark, whatever follows.
CHARACTER = st.characters(
    codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="\ufeff"
)
WORD = st.text(CHARACTER, max_size=6)
CELL = st.one_of(
    NUMBER.map(repr),
    NUMBER.filter(lambda v: abs(v) < 1e15).map(lambda v: f"{v:,.3f}"),
    st.sampled_from(["", "inf", "-inf", "1e400", "n/a", '"', "a,b", "x;y", "1,5", "TRUE"]),
    WORD,
)


@st.composite
def tables(draw) -> tuple[list[str], list[list[str]]]:
    width = draw(st.integers(1, 4))
    names = draw(st.lists(WORD, min_size=width, max_size=width))
    rows = draw(st.lists(st.lists(CELL, min_size=width, max_size=width), max_size=8))
    return names, rows


def expect_named(error: DataError, path: Path) -> None:
    """A refusal names the file and says what to do about it."""
    assert str(path) in str(error), error
    assert re.search(r"\b(set|give|write|save|remove|replace|fix|name|use|list|convert|"
                     r"leave|add|check)\b", str(error), re.IGNORECASE), error  # fmt: skip


QUICK = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}


@settings(max_examples=60, **QUICK)
@given(
    table=tables(),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "cp1252", "utf-16"]),
)
def test_any_table_reads_as_written_or_is_refused(tmp_path: Path, table, delimiter, encoding):
    names, rows = table
    text = io.StringIO()
    csv.writer(text, delimiter=delimiter, lineterminator="\n").writerows([names, *rows])
    try:
        data = text.getvalue().encode(encoding)
    except UnicodeEncodeError:
        data = text.getvalue().encode("utf-8")
        encoding = "utf-8"
    path = tmp_path / "any.csv"
    path.write_bytes(data)
    chosen = None if encoding.startswith("utf-8") else encoding
    try:
        frame = read_table(path, "y", encoding=chosen or "utf-8", delimiter=delimiter)
    except DataError as error:
        expect_named(error, path)
        return
    present = [i for i, row in enumerate(rows) if any(cell.strip() for cell in row)]
    columns = [[rows[i][j] for i in present] for j in range(len(names))]
    kept = [j for j, name in enumerate(names) if name or any(columns[j])]
    assert list(frame.columns) == [names[j] or f"Unnamed: {j}" for j in kept]
    assert frame.index.tolist() == present  # each row keeps its number
    for i, j in enumerate(kept):
        written_cells = columns[j]
        read = [None if pd.isna(c) else c for c in frame.iloc[:, i]]
        assert read == [c or None for c in written_cells]
        for cell, value in zip(written_cells, numbers(frame.iloc[:, i]), strict=True):
            plain = cell.strip().replace(",", "")
            if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})*(\.\d+)?|[+-]?\d+(\.\d*)?(e[+-]?\d+)?", cell):
                assert value == float(plain) or math.isinf(float(plain)), (cell, value)


@settings(max_examples=40, **QUICK)
@given(st.binary(max_size=200), st.sampled_from([None, ",", ";"]))
def test_any_bytes_read_as_a_table_or_are_refused(tmp_path: Path, data: bytes, delimiter) -> None:
    path = tmp_path / "bytes.csv"
    path.write_bytes(data)
    try:
        read_table(path, "y", delimiter=delimiter)
    except DataError as error:
        expect_named(error, path)


def test_any_table_also_types_or_is_refused(tmp_path: Path) -> None:
    """Typing the columns (the fit's next step) meets the same cells without a traceback."""
    numeric = ["1,001.5", "inf", "", "n/a", "2", "-3.5e2", "1,5", "1e400", "1,001", "0"]
    other = [*numeric, "TRUE", "false", "x", "2020-01-01", "Zürich", "1.001,5"]
    rng = np.random.default_rng(0)
    for trial in range(30):
        cells = [rng.choice(numeric, 4), rng.choice(other, 3)]
        frame = pd.DataFrame({
            "a": rng.choice(cells[0], 40), "b": rng.choice(cells[1], 40),
            "y": rng.choice(["p", "q"], 40),
        })  # fmt: skip
        path = written(tmp_path, frame, f"t{trial}.csv")
        try:
            _ = TabularDataModule(path=path, target="y", profile=False).prepared
        except DataError as error:
            expect_named(error, path)
