"""Your own table end to end: fit on a CSV, predict new rows, no train/serve skew."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_breast_cancer

from .conftest import NO_LOGGER, in_fresh_process, newest_output, run


def write_table(path: Path) -> pd.DataFrame:
    """Breast-cancer features, a categorical column and a named label: a user's CSV."""
    bunch = load_breast_cancer(as_frame=True)
    table = bunch.data.iloc[:, :8].copy()
    table["site"] = ["left", "right", "centre"] * (len(table) // 3) + ["left"] * (len(table) % 3)
    table["diagnosis"] = bunch.target.map({0: "malignant", 1: "benign"})
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return table


def fit_on_csv(tmp_path: Path):
    data = tmp_path / "data" / "table.csv"
    table = write_table(data)
    arguments = [f"--data.path={data}", "--data.target=diagnosis", "--run.name=own"]
    return run("fit", tmp_path / "runs", *NO_LOGGER, *arguments), table


def test_fit_on_a_csv_then_predict_new_rows(tmp_path: Path) -> None:
    fitted, table = fit_on_csv(tmp_path)
    assert fitted.datamodule.class_names == ["benign", "malignant"]
    assert (fitted.run_dir / "profile.json").is_file()
    new = tmp_path / "new.csv"
    rows = table.drop(columns=["diagnosis"]).head(9)
    rows.loc[rows.index[0], "site"] = "unseen-site"  # a category training never saw
    rows.to_csv(new, index=False)
    checkpoint = fitted.run_dir / "checkpoints" / "last.ckpt"
    run("predict", tmp_path / "runs", *NO_LOGGER, f"--ckpt_path={checkpoint}",
        f"--data.path={tmp_path / 'data' / 'table.csv'}", "--data.target=diagnosis",
        f"--data.predict_path={new}")  # fmt: skip
    predicted = list(csv.DictReader(newest_output(fitted.run_dir, "predictions.csv").open()))
    assert len(predicted) == 9
    assert {row["predicted"] for row in predicted} <= {"benign", "malignant"}


def test_predict_in_a_fresh_process_without_the_training_data(tmp_path: Path) -> None:
    """Medians, vocabularies and class names come from the checkpoint: moving the training
    table away changes nothing in the predictions."""
    fitted, table = fit_on_csv(tmp_path)
    new = tmp_path / "new.csv"
    table.drop(columns=["diagnosis"]).sample(25, random_state=0).to_csv(new, index=False)
    checkpoint = fitted.run_dir / "checkpoints" / "last.ckpt"
    arguments = [f"--ckpt_path={checkpoint}", f"--data.predict_path={new}"]
    data = tmp_path / "data" / "table.csv"
    run("predict", tmp_path / "runs", *NO_LOGGER, f"--data.path={data}", "--data.target=diagnosis",
        *arguments)  # fmt: skip
    in_training_process = newest_output(fitted.run_dir, "predictions.csv").read_text()

    data.parent.rename(tmp_path / "moved-away")
    result = in_fresh_process("predict", fitted.run_dir / "config.yaml", *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    assert newest_output(fitted.run_dir, "predictions.csv").read_text() == in_training_process
    assert len(in_training_process.splitlines()) == 1 + 25
