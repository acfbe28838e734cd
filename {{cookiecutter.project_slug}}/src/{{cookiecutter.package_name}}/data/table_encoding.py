"""One fitted definition of a table's inputs: fit medians and vocabularies on the training
rows (read as text cells by ``table_reading``), and encode any rows from that fit alone, so
training, ``predict`` and serving turn the same cells into the same features."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch

from .base import InputError
from .findings import Finding
from .table_reading import booleans, numbers, parse_numbers, texts


def encode(frame: pd.DataFrame, state: dict[str, Any]) -> torch.Tensor:
    """Rows as float32 features, from the fitted ``state`` alone: numbers (true/false as 1/0)
    with missing cells set to the training median; categories one-hot over the training
    vocabulary, plus one slot for unseen or missing ones. Training, ``predict`` and serving
    all call this."""
    blocks = [np.zeros((len(frame), 0), dtype=np.float32)]
    for name in state["columns"]:
        if name in state["categorical"]:
            vocabulary = state["categorical"][name]
            codes = pd.Index(vocabulary, dtype=object).get_indexer(texts(frame[name]))
            codes = np.where(codes < 0, len(vocabulary), codes)
            blocks.append(np.eye(len(vocabulary) + 1, dtype=np.float32)[codes])
        else:
            values = typed_column(frame[name], fitted_kind(state, name))
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


def as_cell(value: Any, vocabulary: list[str] | None = None) -> str | None:
    """A JSON value as the text cell a CSV file would hold (``read_table`` reads those). For
    a category (its training ``vocabulary``), a number or true/false is read as the
    vocabulary spells it: 3.0 is the category "3" trained from a file, true the "TRUE" of a
    spreadsheet; a value it has no spelling of is written as a file would write it. None,
    "" and NaN are missing."""
    if isinstance(value, (dict, list)):
        raise TypeError(f"{value!r} is not a single value")
    if value is None or value == "" or (isinstance(value, float) and np.isnan(value)):
        return None  # NaN: a table's missing cell (Python's JSON also reads NaN)
    if vocabulary is None or isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        word = str(value).lower()
        return next((entry for entry in vocabulary if entry.lower() == word), str(value))
    written = texts(pd.Series([value])).iloc[0]  # 3.0 as "3", as a file's number reads
    if written in vocabulary:
        return written
    same = [entry for entry in vocabulary if parse_numbers(pd.Series([entry])).iloc[0] == value]
    return same[0] if len(same) == 1 else written


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
        "booleans": [name for name in features if kinds[name] == "boolean"],
        "feature_names": names,
    }


def typed_column(column: pd.Series, kind: str) -> pd.Series:
    if kind == "boolean":
        return booleans(column)
    return texts(column) if kind == "categorical" else numbers(column, kind == "date")


def encode_records(
    records: Iterable[Any], state: dict[str, Any]
) -> tuple[torch.Tensor, dict[str, pd.Series]]:
    """JSON rows ({column: value}) as one batch, encoded as ``predict`` encodes a file's rows,
    and their typed values for the drift monitor. An InputError names the first row with a
    missing or unknown column, and a column holding what isn't a number where the model takes
    numbers (a file's rows get those as missing values). Each value is read by its fitted
    column's kind (see ``as_cell``).
    """
    cells = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise InputError(f"instance {i}: not an object of column: value pairs")
        check_columns(record, state, f"instance {i}", extra=False)
        try:
            vocabularies = state["categorical"]
            cells.append({n: as_cell(record[n], vocabularies.get(n)) for n in state["columns"]})
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
            what = {"date": "a date", "boolean": "true or false"}.get(
                fitted_kind(state, name), "a finite number"
            )
            value = frame[name].iloc[row]
            raise InputError(f"instance {row}: column {name!r} takes {what}, not {value!r}")
    return encode(frame, state), typed


def fitted_kind(state: dict, name: str) -> str:
    """A fitted column's kind: categorical, date, boolean or numeric."""
    if name in state["categorical"]:
        return "categorical"
    if name in state.get("booleans", ()):  # checkpoints saved before booleans were have none
        return "boolean"
    return "date" if name in state["dates"] else "numeric"
