"""One fitted definition of a table's inputs: read a file as text cells, fit medians and
vocabularies on the training rows, and encode any rows from that fit alone, so training,
``predict`` and serving turn the same cells into the same features."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_breast_cancer

from .base import InputError
from .findings import DataError, Finding
from .table_checks import numbers, texts


def read_table(path: Path | None, target: str) -> pd.DataFrame:
    """Rows numbered from 0 in file order. CSV cells are read as text, so that every type
    is decided here, the same way for training and prediction; only empty cells are missing."""
    if path is None:
        bunch = load_breast_cancer(as_frame=True)
        return bunch.data.assign(**{target: bunch.target.map(dict(enumerate(bunch.target_names)))})
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file (data.path and predict_path take CSV or Parquet)")
    if Path(path).suffix == ".parquet":
        table = pd.read_parquet(path)
    else:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    return table.rename(columns=str).reset_index(drop=True)


def encode(frame: pd.DataFrame, state: dict[str, Any]) -> torch.Tensor:
    """Rows as float32 features, from the fitted ``state`` alone: numbers with missing cells
    set to the training median; categories one-hot over the training vocabulary, plus one
    slot for unseen or missing ones. Training, ``predict`` and serving all call this."""
    blocks = [np.zeros((len(frame), 0), dtype=np.float32)]
    for name in state["columns"]:
        if name in state["categorical"]:
            vocabulary = state["categorical"][name]
            codes = pd.Index(vocabulary, dtype=object).get_indexer(texts(frame[name]))
            codes = np.where(codes < 0, len(vocabulary), codes)
            blocks.append(np.eye(len(vocabulary) + 1, dtype=np.float32)[codes])
        else:
            values = numbers(frame[name], dates=name in state["dates"])
            blocks.append(values.fillna(state["numeric"][name]).to_numpy(np.float32)[:, None])
    return torch.from_numpy(np.concatenate(blocks, axis=1))


def check_columns(columns: Iterable[str], state: dict[str, Any], where: str, extra: bool) -> None:
    """An InputError unless ``columns`` hold every column the model needs; ``extra``: others
    are allowed (a file's label or notes), else named as unknown."""
    columns, expected = list(columns), state["columns"]
    absent = [name for name in expected if name not in columns]
    if absent:
        raise InputError(f"{where}: no column {absent} (the model needs {expected})")
    unknown = [name for name in columns if name not in expected]
    if unknown and not extra:
        raise InputError(f"{where}: unknown column {unknown} (the model takes {expected})")


def as_cell(value: Any) -> str | None:
    """A JSON value as the text cell a CSV file would hold (``read_table`` reads those)."""
    if isinstance(value, (dict, list)):
        raise TypeError(f"{value!r} is not a single value")
    return None if value is None or value == "" else str(value)


def fit_encoding(
    train: pd.DataFrame, kinds: dict, features: list[str], limit: int, findings: list[Finding]
) -> dict[str, Any]:
    """What ``encode`` needs, from the training rows only: medians, and vocabularies of the
    ``limit`` most frequent categories (ties by name)."""
    numeric, categorical, names = {}, {}, []
    for name in features:
        if kinds[name] != "categorical":
            median = train[name].median()
            numeric[name] = 0.0 if pd.isna(median) else float(median)
            names.append(name)
            continue
        counts = sorted(train[name].value_counts().items(), key=lambda kv: (-kv[1], kv[0]))
        categorical[name] = [str(value) for value, _ in counts[:limit]]
        names += [f"{name}={value}" for value in [*categorical[name], "<unknown>"]]
        if len(counts) > limit:
            message = (
                f"kept the {limit} most frequent of {len(counts)} training categories; "
                "the rest map to the unknown slot"
            )
            findings.append(Finding("category_cap", "info", name, message))
    return {
        "input_shape": [len(names)],
        "columns": features,
        "numeric": numeric,
        "categorical": categorical,
        "dates": [name for name in features if kinds[name] == "date"],
        "feature_names": names,
    }


def typed_column(column: pd.Series, kind: str) -> pd.Series:
    return texts(column) if kind == "categorical" else numbers(column, kind == "date")


def encode_records(
    records: Iterable[Any], state: dict[str, Any]
) -> tuple[torch.Tensor, dict[str, pd.Series]]:
    """JSON rows ({column: value}) as one batch, encoded as ``predict`` encodes a file's rows,
    and their typed values for the drift monitor. An InputError names the first row with a
    missing or unknown column, and a column holding what isn't a number where the model takes
    numbers (a file's rows get those as missing values).
    """
    cells = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise InputError(f"instance {i}: not an object of column: value pairs")
        check_columns(record, state, f"instance {i}", extra=False)
        try:
            cells.append({name: as_cell(record[name]) for name in state["columns"]})
        except TypeError as error:
            raise InputError(f"instance {i}: {error}") from error
    frame = pd.DataFrame(cells, columns=state["columns"], dtype=object)
    typed = {name: typed_column(frame[name], fitted_kind(state, name)) for name in frame.columns}
    for name, values in typed.items():
        if name in state["categorical"]:
            continue
        bad = frame[name].notna() & ~np.isfinite(values.to_numpy(np.float64, na_value=np.nan))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            what = "a date" if name in state["dates"] else "a finite number"
            value = frame[name].iloc[row]
            raise InputError(f"instance {row}: column {name!r} takes {what}, not {value!r}")
    return encode(frame, state), typed


def fitted_kind(state: dict, name: str) -> str:
    """A fitted column's kind: categorical, date or numeric."""
    if name in state["categorical"]:
        return "categorical"
    return "date" if name in state["dates"] else "numeric"
