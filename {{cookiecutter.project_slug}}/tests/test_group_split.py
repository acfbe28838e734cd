"""Group-safe splits: the rows of one patient never sit in training and test at once."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from {{ cookiecutter.package_name }}.data.findings import DataError
from {{ cookiecutter.package_name }}.data.tabular import TabularDataModule


@pytest.fixture
def visits(tmp_path: Path) -> Path:
    """120 patients, 3 visits each: near-identical rows with the patient's diagnosis."""
    bunch = load_breast_cancer(as_frame=True)
    patients = bunch.data.iloc[:120, :5].reset_index(drop=True)
    patients["diagnosis"] = bunch.target[:120].map({0: "malignant", 1: "benign"}).to_numpy()
    patients["patient"] = [f"p{i:03d}" for i in range(len(patients))]
    frame = patients.loc[patients.index.repeat(3)].reset_index(drop=True)
    noise = np.random.default_rng(0).normal(1, 0.01, (len(frame), 5))
    frame.iloc[:, :5] = frame.iloc[:, :5].to_numpy() * noise  # visits differ a little
    frame.to_csv(tmp_path / "visits.csv", index=False)
    return tmp_path / "visits.csv"


def module(path: Path, **kwargs) -> TabularDataModule:
    return TabularDataModule(path=path, target="diagnosis", **kwargs)


def splits_of_each_patient(datamodule: TabularDataModule, path: Path) -> pd.Series:
    data = datamodule.prepared
    patient = pd.read_csv(path)["patient"]
    rows = pd.DataFrame({"patient": patient[[int(i) for i in data.ids]], "split": data.splits})
    return rows.groupby("patient")["split"].nunique()


def test_a_random_split_puts_one_patient_in_several_splits(visits: Path) -> None:
    """The leak ``split_by`` prevents: a patient's other visits are in training."""
    assert (splits_of_each_patient(module(visits), visits) > 1).sum() > 30


def test_split_by_keeps_each_patient_in_one_split(visits: Path, tmp_path: Path) -> None:
    datamodule = module(visits, split_by="patient")
    assert (splits_of_each_patient(datamodule, visits) == 1).all()
    data = datamodule.prepared
    assert "patient" not in datamodule.feature_names
    frame = pd.DataFrame({"label": data.labels, "split": data.splits})
    overall = (frame["label"] == "malignant").mean()
    for split, rows in frame.groupby("split"):
        assert abs((rows["label"] == "malignant").mean() - overall) < 0.08, split
        assert abs(len(rows) / len(frame) - {"train": 0.7}.get(split, 0.15)) < 0.05, split
    datamodule.write_reports(tmp_path / "run")
    with (tmp_path / "run" / "split_manifest.csv").open() as file:
        manifest = list(csv.DictReader(file))
    assert [row["group"] for row in manifest[:3]] == ["p000"] * 3
    assert {row["split"] for row in manifest if row["group"] == "p000"} == {
        data.splits[data.ids.index("0")]
    }


def test_the_group_split_follows_the_seed(visits: Path) -> None:
    first, again = (module(visits, split_by="patient").prepared for _ in range(2))
    other = module(visits, split_by="patient", seed=7).prepared
    assert first.splits == again.splits
    assert first.splits != other.splits
    assert module(visits, split_by="patient").split_settings()["split_by"] == "patient"


def test_changing_val_fraction_keeps_the_test_patients(visits: Path) -> None:
    tested = [
        {i for i, s in zip(d.ids, d.splits, strict=True) if s == "test"}
        for d in (module(visits, split_by="patient", val_fraction=f).prepared for f in (0.1, 0.2))
    ]
    assert tested[0] == tested[1]


def test_split_by_with_a_time_column_is_refused(visits: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(visits)
    frame["seen"] = pd.date_range("2024-01-01", periods=len(frame), freq="D").astype(str)
    frame.to_csv(tmp_path / "timed.csv", index=False)
    datamodule = module(tmp_path / "timed.csv", split_by="patient", time_column="seen")
    with pytest.raises(DataError, match="set one of them"):
        _ = datamodule.prepared


def test_too_few_groups_are_refused(visits: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(visits)
    frame["patient"] = np.where(frame.index % 2, "a", "b")
    frame.to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(DataError, match="at least 3 groups"):
        _ = module(tmp_path / "two.csv", split_by="patient").prepared


def group_key_findings(datamodule: TabularDataModule) -> list[str]:
    return [f.subject for f in datamodule.prepared.findings if f.check == "group_key"]


def test_a_patient_column_under_a_random_split_is_named(visits: Path) -> None:
    finding = next(f for f in module(visits).prepared.findings if f.check == "group_key")
    assert (finding.subject, finding.severity) == ("patient", "warning")
    assert "--data.init_args.split_by patient" in finding.message
    assert group_key_findings(module(visits, split_by="patient")) == []


def test_group_key_check_is_quiet_on_features(visits: Path, tmp_path: Path) -> None:
    """The embedded table, and a repeated column unrelated to the label, raise no warning."""
    assert group_key_findings(TabularDataModule()) == []
    frame = pd.read_csv(visits)
    frame["patient"] = np.random.default_rng(1).permutation(frame["patient"].to_numpy())
    frame.to_csv(tmp_path / "shuffled.csv", index=False)
    assert group_key_findings(module(tmp_path / "shuffled.csv")) == []
