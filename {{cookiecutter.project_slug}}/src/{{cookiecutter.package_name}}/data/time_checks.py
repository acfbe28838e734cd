"""Checks of time in tables: whole numbers that are times, labels that move along a time,
and the order of a time split. Times are sortable values: numbers (a year, an epoch) or
dates as ``parse_times`` reads them."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .findings import DataError, Finding
from .split import time_cuts
from .table_reading import name_rows, numbers

SHIFT_BLOCKS = 5  # label_shift compares the first and the last of this many blocks in time
SHIFT_TV = 0.25  # their labels' total variation distance at which the labels moved
SHIFT_ROWS = 20  # rows each of those blocks needs at least
# Words that make a column of whole numbers a time ("time" alone is often a duration).
TIME_WORDS = {"year", "yr", "epoch", "timestamp", "date", "datetime"}


def counts_time(name: str, column: pd.Series) -> bool:
    """Whole numbers in a column named for a time (``Year``, ``fiscal_year``, ``epoch``; not
    ``YearBuilt``, a feature): a year or a Unix time, which orders the rows as a date does."""
    words = re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower())
    cells = column.dropna()
    whole = len(cells) > 0 and bool((cells == cells.round()).all())
    return whole and bool(words) and words[-1] in TIME_WORDS


def label_shift(
    name: str, times: pd.Series, labels: np.ndarray, class_names: Sequence[str], by_time: bool
) -> list[Finding]:
    """A warning when the labels of the earliest and the latest fifth of the rows (in the
    order of ``times``) differ by a total variation of ``SHIFT_TV`` or more: a relabelling,
    a new annotation guide or a changing population, which a random split hides (the test
    rows look like the training rows; the future won't). Measured on real tables: 0.56 on
    daily weather whose labels changed over the years, 0.08 and 0.02 on market directions."""
    known = times.notna().to_numpy()
    if known.sum() < SHIFT_BLOCKS * SHIFT_ROWS:
        return []
    order = np.argsort(times.to_numpy()[known], kind="stable")
    n = len(order)
    try:  # cut between timestamps: ties in a coarse time (a year) keep the file's order
        early, late = time_cuts(
            times.to_numpy()[known][order], [n // SHIFT_BLOCKS, n - n // SHIFT_BLOCKS]
        )
    except DataError:  # a single time
        return []
    ordered = labels[known][order]
    first, last = (
        np.bincount(b, minlength=len(class_names)) / len(b)
        for b in (ordered[:early], ordered[late:])
    )
    distance = 0.5 * float(np.abs(first - last).sum())
    if distance < SHIFT_TV:
        return []

    def shares(p: np.ndarray) -> str:
        return ", ".join(f"{class_names[c]} {p[c]:.0%}" for c in np.argsort(-p)[:3])

    advice = (
        "The test split's labels differ from the training split's."
        if by_time
        else "A random split hides this: test on the latest rows with "
        f"--data.init_args.time_column {name}."
    )
    message = (
        f"the labels move with {name}: the earliest fifth of the rows {shares(first)}; the "
        f"latest fifth {shares(last)} (total variation {distance:.2f}). {advice} Check how "
        "the labels were made over time."
    )
    return [Finding("label_shift", "warning", name, message)]


def parse_times(column: pd.Series) -> pd.Series:
    """Numbers (a year, an epoch) or dates of the time column; DataError naming bad rows."""
    as_numbers = numbers(column)
    if pd.api.types.is_datetime64_any_dtype(column) or as_numbers.isna().any():
        times = pd.to_datetime(column, errors="coerce", format="mixed", utc=True)
        times = times.dt.tz_convert(None)
    else:
        times = as_numbers
    bad = column.index[times.isna()]
    if len(bad):
        shown = [column.loc[r] for r in bad[:5]]
        raise DataError(
            f"time column {column.name!r}: {len(bad)} cells are no time ({name_rows(bad)}: "
            f"{shown}); fix or remove those rows"
        )
    return times


def time_order(times: Sequence, splits: Sequence[str], ids: Sequence[str]) -> list[Finding]:
    """The time range of each split, and an error for any training row not earlier than
    every validation and test row: a model must not learn from the future it is tested on,
    nor from the day (or year) it is tested on."""
    times, splits, ids = np.asarray(times), np.asarray(splits), np.asarray(ids)
    parts = [s for s in ("train", "val", "test") if (splits == s).any()]
    ranges = "; ".join(
        f"{s} {times[splits == s].min()} .. {times[splits == s].max()}" for s in parts
    )
    findings = [Finding("time_order", "info", "dataset", f"time ranges: {ranges}")]
    held_out = times[np.isin(splits, ("val", "test"))]
    if len(held_out) and (splits == "train").any():
        late = (splits == "train") & (times >= held_out.min())
        if late.any():
            message = (
                f"{late.sum()} training rows are not earlier than the first validation/test row "
                f"({held_out.min()}): {name_rows(ids[late])}"
            )
            findings.append(Finding("time_order", "error", "dataset", message, "fail"))
    return findings
