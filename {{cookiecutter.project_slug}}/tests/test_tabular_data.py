"""Tabular data: the embedded table, user files, and tables that can't be trained on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from {{ cookiecutter.package_name }}.data.tabular import TabularDataModule


@pytest.fixture
def table() -> pd.DataFrame:
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.iloc[:, :5].copy()
    frame["diagnosis"] = bunch.target.map({0: "malignant", 1: "benign"})
    return frame


def test_embedded_table() -> None:
    datamodule = TabularDataModule()
    assert datamodule.input_shape == [30]
    assert datamodule.class_names == ["benign", "malignant"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_reads_user_files(tmp_path: Path, table: pd.DataFrame, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path)
    datamodule = TabularDataModule(path=path, target="diagnosis")
    assert datamodule.input_shape == [5]
    assert datamodule.class_names == ["benign", "malignant"]
    assert datamodule.feature_names == list(table.columns[:5])
    assert sum(len(datamodule.dataset(s)) for s in ("train", "val", "test")) == len(table)


def test_missing_target_column_is_named(tmp_path: Path, table: pd.DataFrame) -> None:
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=r"no target column 'label'.*diagnosis"):
        _ = TabularDataModule(path=tmp_path / "t.csv", target="label").num_classes


def test_non_numeric_feature_is_named(tmp_path: Path, table: pd.DataFrame) -> None:
    table["site"] = "left"
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=r"non-numeric feature columns \['site'\]"):
        _ = TabularDataModule(path=tmp_path / "t.csv", target="diagnosis").num_classes


def test_missing_values_are_named(tmp_path: Path, table: pd.DataFrame) -> None:
    table.iloc[3, 1] = None
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=rf"missing values in columns \['{table.columns[1]}'\]"):
        _ = TabularDataModule(path=tmp_path / "t.csv", target="diagnosis").num_classes
