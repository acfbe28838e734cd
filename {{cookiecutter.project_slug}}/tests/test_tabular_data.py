"""Tabular data: the embedded table, user files, and planted faults each check must name."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_breast_cancer

from {{ cookiecutter.package_name }}.data.findings import DataError, Finding, raise_on_failures
from {{ cookiecutter.package_name }}.data.table_checks import TableRules
from {{ cookiecutter.package_name }}.data.tabular import TabularDataModule
from {{ cookiecutter.package_name }}.data.time_checks import time_order


@pytest.fixture
def table() -> pd.DataFrame:
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.iloc[:, :5].copy()
    frame["diagnosis"] = bunch.target.map({0: "malignant", 1: "benign"})
    return frame


def module(tmp_path: Path, table: pd.DataFrame, **kwargs) -> TabularDataModule:
    table.to_csv(tmp_path / "t.csv", index=False)
    return TabularDataModule(path=tmp_path / "t.csv", target="diagnosis", **kwargs)


def found(datamodule: TabularDataModule, check: str) -> list[Finding]:
    return [f for f in datamodule.prepared.findings if f.check == check]


def the_finding(datamodule: TabularDataModule, check: str, severity: str, subject: str) -> str:
    """The message of the one finding of ``check`` about ``subject``, at ``severity``."""
    matches = [f for f in found(datamodule, check) if f.subject == subject]
    assert [f.severity for f in matches] == [severity], datamodule.prepared.findings
    return matches[0].message


def encoded(datamodule: TabularDataModule, row: str) -> torch.Tensor:
    """The features a row was encoded to, wherever the split put it."""
    data = datamodule.prepared
    position = data.ids.index(row)
    split = data.splits[position]
    within = sum(1 for s in data.splits[:position] if s == split)
    return data.datasets[split].tensors[0][within]


def train_rows(datamodule: TabularDataModule) -> list[int]:
    data = datamodule.prepared
    return [int(i) for i, s in zip(data.ids, data.splits, strict=True) if s == "train"]


def test_embedded_table_is_clean() -> None:
    datamodule = TabularDataModule()
    assert datamodule.input_shape == [30]
    assert datamodule.class_names == ["benign", "malignant"]
    assert {f.severity for f in datamodule.prepared.findings} == {"info"}
    raise_on_failures(datamodule.prepared.findings, type(datamodule))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_reads_user_files(tmp_path: Path, table: pd.DataFrame, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path)
    datamodule = TabularDataModule(path=path, target="diagnosis")
    assert datamodule.input_shape == [5]
    assert datamodule.class_names == ["benign", "malignant"]
    assert datamodule.feature_names == list(table.columns[:5])
    assert sum(len(datamodule.dataset(s)) for s in ("train", "val", "test")) == len(table)
    assert {f.severity for f in datamodule.prepared.findings} == {"info"}


def test_missing_target_column_is_named(tmp_path: Path, table: pd.DataFrame) -> None:
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"no target column 'label'.*diagnosis"):
        _ = TabularDataModule(path=tmp_path / "t.csv", target="label").num_classes


def test_missing_values_are_imputed_with_the_training_median(
    tmp_path: Path, table: pd.DataFrame
) -> None:
    column = table.columns[1]
    table.loc[[3, 40], column] = np.nan
    datamodule = module(tmp_path, table)
    message = the_finding(datamodule, "missing_values", "warning", column)
    assert "rows 3, 40" in message
    median = table.loc[train_rows(datamodule), column].median()
    assert datamodule.state["numeric"][column] == pytest.approx(median)
    assert float(encoded(datamodule, "3")[1]) == pytest.approx(median, rel=1e-6)

    dropping = module(tmp_path, table, rules=TableRules(missing_values="drop"))
    assert "3" not in dropping.prepared.ids and "40" not in dropping.prepared.ids
    assert len(dropping.prepared.ids) == len(table) - 2


def test_junk_strings_in_a_numeric_column(tmp_path: Path, table: pd.DataFrame) -> None:
    column = table.columns[2]
    table[column] = table[column].astype(object)
    table.loc[5, column], table.loc[9, column] = "n/a", "?"
    datamodule = module(tmp_path, table)
    message = the_finding(datamodule, "junk_values", "warning", column)
    assert "'n/a'" in message and "'?'" in message and "rows 5, 9" in message
    assert column in datamodule.state["numeric"]
    assert "rows 5, 9" in the_finding(datamodule, "missing_values", "warning", column)

    failing = module(tmp_path, table, rules=TableRules(junk_values="fail"))
    with pytest.raises(DataError, match=rf"\[junk_values\] {re.escape(column)}"):
        raise_on_failures(failing.prepared.findings, type(failing))


def test_words_among_numbers_make_a_categorical_column(tmp_path: Path, table) -> None:
    table["grade"] = np.where(np.arange(len(table)) % 3 == 0, "high", "2")
    datamodule = module(tmp_path, table)
    assert "high" in the_finding(datamodule, "mixed_types", "warning", "grade")
    assert datamodule.state["categorical"]["grade"] == ["2", "high"]


def test_id_like_column_that_leaks_the_label(tmp_path: Path, table: pd.DataFrame) -> None:
    ordered = table.sort_values("diagnosis", kind="stable").reset_index(drop=True)
    ordered["patient_ref"] = np.arange(len(ordered)) + 1000
    shuffled = ordered.sample(frac=1.0, random_state=0).reset_index(drop=True)
    datamodule = module(tmp_path, shuffled)
    assert "distinct" in the_finding(datamodule, "id_like_column", "warning", "patient_ref")
    assert "patient_ref" not in datamodule.state["columns"]
    raise_on_failures(datamodule.prepared.findings, type(datamodule))

    kept = module(tmp_path, shuffled, rules=TableRules(id_like_column="keep"))
    assert "ROC AUC" in the_finding(kept, "label_leak", "error", "patient_ref")  # it stops fit
    with pytest.raises(DataError, match=r"\[label_leak\] patient_ref"):
        raise_on_failures(kept.prepared.findings, type(kept))


def test_float_column_following_the_row_order_is_id_like(tmp_path: Path, table) -> None:
    table["visit_order"] = np.arange(len(table)) * 0.37 + 0.1
    datamodule = module(tmp_path, table)
    assert "row order" in the_finding(datamodule, "id_like_column", "warning", "visit_order")


def test_constant_column_is_dropped(tmp_path: Path, table: pd.DataFrame) -> None:
    table["site"] = "left"
    datamodule = module(tmp_path, table)
    assert "'left'" in the_finding(datamodule, "constant_column", "warning", "site")
    assert datamodule.input_shape == [5] and "site" in datamodule.state["dropped"]


def test_outlier_sentinel_is_named(tmp_path: Path, table: pd.DataFrame) -> None:
    column = table.columns[0]
    table.loc[7, column] = -999
    datamodule = module(tmp_path, table)
    assert "row 7 = -999" in the_finding(datamodule, "outliers", "warning", column)
    assert "7" in datamodule.prepared.ids
    dropping = module(tmp_path, table, rules=TableRules(outliers="drop"))
    assert "7" not in dropping.prepared.ids


def test_counts_mostly_zero_are_scored_against_their_nonzero_values(
    tmp_path: Path, table: pd.DataFrame
) -> None:
    """Count columns of mostly zeros (their median absolute deviation 0): ordinary counts stay
    quiet, a sentinel among them is named."""
    rng = np.random.default_rng(0)
    table["claims"] = np.where(rng.random(len(table)) < 0.98, 0, rng.integers(1, 31, len(table)))
    table["visits"] = np.where(rng.random(len(table)) < 0.85, 0, rng.integers(1, 7, len(table)))
    assert not found(module(tmp_path, table), "outliers")
    table.loc[9, "visits"] = 9999
    assert "row 9 = 9999" in the_finding(module(tmp_path, table), "outliers", "warning", "visits")


def test_whole_numbers_that_look_like_codes_get_a_hint(tmp_path: Path, table: pd.DataFrame) -> None:
    """Region codes whose label rates jump about are named; an ordered quantity is not."""
    rng = np.random.default_rng(0)
    malignant = (table["diagnosis"] == "malignant").to_numpy()
    regions = rng.permutation(np.arange(1, 31))  # each class lives in its own 15 regions
    table["region"] = np.where(malignant, rng.choice(regions[:15], len(table)),
                               rng.choice(regions[15:], len(table)))  # fmt: skip
    table["age"] = 40 + 15 * malignant + rng.integers(0, 25, len(table))
    (hint,) = found(module(tmp_path, table), "nominal_codes")
    assert (hint.subject, hint.severity) == ("region", "info")
    assert "--data.init_args.categorical" in hint.message


def dates(count: int, seed: int | None = None) -> np.ndarray:
    days = pd.date_range("2020-01-01", periods=count, freq="D").strftime("%Y-%m-%d").to_numpy()
    return days if seed is None else np.random.default_rng(seed).permutation(days)


def test_timestamp_column_under_a_random_split(tmp_path: Path, table: pd.DataFrame) -> None:
    table["visit_date"] = dates(len(table))
    datamodule = module(tmp_path, table)
    message = the_finding(datamodule, "timestamp_column", "warning", "visit_date")
    assert "--data.init_args.time_column visit_date" in message
    assert datamodule.state["dates"] == ["visit_date"]


def test_time_split_trains_on_the_past(tmp_path: Path, table: pd.DataFrame) -> None:
    table["visit_date"] = dates(len(table), seed=0)
    datamodule = module(tmp_path, table, time_column="visit_date")
    data = datamodule.prepared
    when = pd.to_datetime(table["visit_date"])
    by_split = {
        split: when[[int(i) for i, s in zip(data.ids, data.splits, strict=True) if s == split]]
        for split in ("train", "val", "test")
    }
    assert by_split["train"].max() <= min(by_split["val"].min(), by_split["test"].min())
    assert "visit_date" not in datamodule.state["columns"]
    assert [f.severity for f in found(datamodule, "time_order")] == ["info"]
    assert not found(datamodule, "timestamp_column")

    leaking = time_order(np.array([1, 2, 5, 4]), ["train", "train", "train", "val"], list("abcd"))
    assert [f.severity for f in leaking] == ["info", "error"] and "row c" in leaking[1].message


def split_values(datamodule: TabularDataModule, column: pd.Series) -> dict[str, set]:
    """The values of ``column`` (indexed by row id) that each split holds."""
    data = datamodule.prepared
    return {
        split: {column[int(i)] for i, s in zip(data.ids, data.splits, strict=True) if s == split}
        for split in ("train", "val", "test")
    }


def test_a_time_split_cuts_between_times_never_inside_one(
    tmp_path: Path, table: pd.DataFrame
) -> None:
    """Rows of one year all train, all validate or all test: a cut inside a year would test
    on the year the model trained on."""
    table["year"] = np.random.default_rng(0).integers(2001, 2011, len(table))
    years = split_values(module(tmp_path, table, time_column="year"), table["year"])
    assert max(years["train"]) < min(years["val"]) and max(years["val"]) < min(years["test"])

    table["year"] = np.where(np.arange(len(table)) < 500, 2001, 2002)
    with pytest.raises(DataError, match="2 distinct times can't be cut into 3 parts"):
        _ = module(tmp_path, table, time_column="year").prepared
    same_time = time_order(np.array([1, 2, 2, 3]), ["train", "train", "val", "test"], list("abcd"))
    assert [f.severity for f in same_time] == ["info", "error"] and "row b" in same_time[1].message


def test_a_year_column_under_a_random_split_is_a_time(tmp_path: Path, table: pd.DataFrame) -> None:
    table["Year"] = np.random.default_rng(0).integers(2001, 2011, len(table))
    table["YearBuilt"] = table["Year"] - 30  # a feature named for a year, not the rows' time
    datamodule = module(tmp_path, table)
    message = the_finding(datamodule, "timestamp_column", "warning", "Year")
    assert "--data.init_args.time_column Year" in message
    assert [f.subject for f in found(datamodule, "timestamp_column")] == ["Year"]


def test_labels_that_move_with_time_are_flagged(tmp_path: Path, table: pd.DataFrame) -> None:
    """A relabelling over time (the later rows' labels mostly one class) is named; labels
    that keep their balance over time are not."""
    table["visit_date"] = dates(len(table), seed=0)  # the file's rows in a random order
    assert not found(module(tmp_path, table), "label_shift")
    table.loc[table["visit_date"] > "2021-02-01", "diagnosis"] = "benign"  # the latest ~30 %
    datamodule = module(tmp_path, table)
    message = the_finding(datamodule, "label_shift", "warning", "visit_date")
    assert "benign 100%" in message and "--data.init_args.time_column visit_date" in message


def test_unparseable_times_are_named(tmp_path: Path, table: pd.DataFrame) -> None:
    table["visit_date"] = dates(len(table))
    table.loc[4, "visit_date"] = "someday"
    with pytest.raises(DataError, match=r"visit_date.*row 4.*someday"):
        _ = module(tmp_path, table, time_column="visit_date").prepared


def test_duplicate_across_splits_is_dropped(tmp_path: Path, table: pd.DataFrame) -> None:
    doubled = pd.concat([table, table.iloc[:12]], ignore_index=True)
    datamodule = module(tmp_path, doubled)
    leaks = found(datamodule, "duplicate_across_splits")
    assert leaks and {f.severity for f in leaks} == {"warning"}
    for leak in leaks:
        original = re.search(r"training sample (\d+)", leak.message).group(1)
        assert int(original) % len(table) == int(leak.subject) % len(table)
        assert leak.subject not in datamodule.prepared.ids


def test_many_duplicates_are_kept_and_said_so(tmp_path: Path, table: pd.DataFrame) -> None:
    """Copies beyond a few percent of a split are not dropped (that would silently reshape
    the split): one warning gives their share beside the rate of repeats within training."""
    doubled = pd.concat([table, table.iloc[:150]], ignore_index=True)
    datamodule = module(tmp_path, doubled)
    message = the_finding(datamodule, "duplicate_across_splits", "warning", "dataset")
    assert "so they are kept" in message and "Within training" in message
    assert len(datamodule.prepared.ids) == len(doubled)


def test_equal_rows_with_other_labels_are_a_conflict_not_a_leak(
    tmp_path: Path, table: pd.DataFrame
) -> None:
    flipped = table.iloc[:12].assign(
        diagnosis=lambda t: t["diagnosis"].map({"malignant": "benign", "benign": "malignant"})
    )
    datamodule = module(tmp_path, pd.concat([table, flipped], ignore_index=True))
    message = the_finding(datamodule, "label_conflict", "warning", "dataset")
    assert message.startswith("12 groups of identical samples carry different labels")
    assert not found(datamodule, "duplicate_across_splits")
    assert len(datamodule.prepared.ids) == len(table) + 12  # nothing dropped


def test_an_imbalance_is_reported_and_left_alone_unless_asked(
    tmp_path: Path, table: pd.DataFrame
) -> None:
    """No remedy by default (class weights hurt real imbalanced tables); one when asked."""
    rare = table[table["diagnosis"] == "malignant"].iloc[:30]
    imbalanced = pd.concat([table[table["diagnosis"] == "benign"], rare])
    datamodule = module(tmp_path, imbalanced)
    (finding,) = found(datamodule, "class_imbalance")
    assert (finding.severity, finding.action) == ("warning", "keep")
    assert "val/f1_macro" in finding.message and datamodule.class_weights is None
    weighted = module(tmp_path, imbalanced, rules=TableRules(class_imbalance="class_weights"))
    benign, malignant = weighted.class_weights
    assert malignant > 5 * benign


def test_categories_are_fitted_on_training_rows(tmp_path: Path, table: pd.DataFrame) -> None:
    sites = np.random.default_rng(0).choice(["left", "right", "centre", "top"], len(table))
    table["site"] = sites
    datamodule = module(tmp_path, table, max_categories=3)
    training = pd.Series(sites[train_rows(datamodule)]).value_counts()
    assert datamodule.state["categorical"]["site"] == list(training.index[:3])
    assert found(datamodule, "category_cap")
    names = datamodule.feature_names
    assert names[5:] == [f"site={v}" for v in training.index[:3]] + ["site=<unknown>"]

    new = table.iloc[:3].drop(columns="diagnosis").assign(site=["mars", training.index[0], None])
    new.to_csv(tmp_path / "new.csv", index=False)
    predicting = module(tmp_path, table, max_categories=3, predict_path=tmp_path / "new.csv")
    inputs, ids = predicting.read_predict_inputs()
    x = inputs.tensors[0]
    assert ids == ["0", "1", "2"] and x.shape == (3, len(names))
    assert x[:, 5:].tolist() == [[0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 1]]


def test_predict_needs_every_feature_column(tmp_path: Path, table: pd.DataFrame) -> None:
    fitted = module(tmp_path, table)
    torch.save({"TabularDataModule": fitted.state}, tmp_path / "last.ckpt")
    table.drop(columns=[table.columns[3], "diagnosis"]).to_csv(tmp_path / "new.csv", index=False)
    moved = TabularDataModule(
        path=tmp_path / "gone.csv",
        target="diagnosis",
        predict_path=tmp_path / "new.csv",
        fitted_from=tmp_path / "last.ckpt",
    )
    with pytest.raises(DataError, match=rf"no column \['{table.columns[3]}'\]"):
        moved.read_predict_inputs()
    table.to_csv(tmp_path / "new.csv", index=False)
    inputs, ids = moved.read_predict_inputs()
    assert len(ids) == len(table) and inputs.tensors[0].shape == (len(table), 5)


def test_profile_pictures(tmp_path: Path, table: pd.DataFrame) -> None:
    table.loc[[2, 3], table.columns[0]] = np.nan
    datamodule = module(tmp_path, table)
    datamodule.write_reports(tmp_path / "run")
    plots = sorted(p.name for p in (tmp_path / "run" / "plots").iterdir())
    assert plots == [
        "profile_class_balance.png",
        "profile_histograms.png",
        "profile_missing_values.png",
    ]


def test_a_missing_table_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere\.csv: no such file"):
        _ = TabularDataModule(path=tmp_path / "nowhere.csv").prepared
