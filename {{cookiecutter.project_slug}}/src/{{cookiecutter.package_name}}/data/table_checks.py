"""Checks of tables: junk and mixed cells, missing values, constant, ID-like and leaking
columns, codes read as numbers, outliers and timestamp columns (time itself: ``time_checks``).

Plain functions from a table to findings (subject: a column or a row id); ``TableRules``
says what ``fit`` does about each. Cells become values as ``table_reading`` reads them
(``numbers``, ``texts``): the same way rows are encoded, for training and prediction alike.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency, spearmanr
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.tree import DecisionTreeClassifier

from .checks import CommonRules
from .findings import Finding
from .table_reading import JUNK, name_rows, parse_numbers, seconds, texts
from .time_checks import counts_time

MIXED_SHARE = 0.1  # numbers and words each at least this share of a column's cells: mixed
DATE_SHARE = 0.95  # at least this share of a text column parses as dates: a timestamp
ID_UNIQUE = 0.95  # integer or text columns this unique are identifiers
ID_RHO = 0.99  # |Spearman rho| of a numeric column with the row order: a row counter
MIN_ROWS = 20  # fewer non-missing cells say nothing about uniqueness or order
CODE_LEVELS = 20  # whole-number columns with this many values may be codes of categories
CODE_RHO = 0.5  # ... when their label rates follow the numbers' order less than this
LEAK_ROWS = 20_000  # the leak check fits its trees on at most this many training rows


@dataclass
class TableRules(CommonRules):
    """What ``fit`` does about each check's findings; ``fail`` stops before the first step.

    Args:
        missing_label: ``drop`` rows without a label, or ``fail``.
        missing_values: ``impute`` (training median; unknown category), ``drop`` the rows,
            or ``fail``.
        junk_values: ``convert`` words such as "n/a" or "?" in a column of numbers to
            missing values (then the missing_values rule), or ``fail``.
        mixed_types: ``convert`` a column of numbers and words to a categorical one,
            ``drop`` it, or ``fail``.
        constant_column: ``drop`` a column with a single value, ``keep`` it, or ``fail``.
        outliers: ``keep`` rows with extreme values (a warning), ``drop`` them, or ``fail``.
        id_like_column: ``drop`` identifier-like columns whatever their name, ``keep``, or
            ``fail``.
        label_leak: ``fail`` on a column that alone predicts the label implausibly well,
            ``drop`` it, or ``keep`` it.
        timestamp_column: ``keep`` a date column under a random split (a warning: consider
            ``time_column``), ``drop`` it, or ``fail``.
        group_key: ``keep`` a column that looks like a patient or customer key under a
            random split (a warning: consider ``split_by``), or ``fail``.
    """

    missing_label: Literal["drop", "fail"] = "drop"
    missing_values: Literal["impute", "drop", "fail"] = "impute"
    junk_values: Literal["convert", "fail"] = "convert"
    mixed_types: Literal["convert", "drop", "fail"] = "convert"
    constant_column: Literal["drop", "keep", "fail"] = "drop"
    outliers: Literal["keep", "drop", "fail"] = "keep"
    id_like_column: Literal["drop", "keep", "fail"] = "drop"
    label_leak: Literal["fail", "drop", "keep"] = "fail"
    timestamp_column: Literal["keep", "drop", "fail"] = "keep"
    group_key: Literal["keep", "fail"] = "keep"


def looks_like_dates(cells: pd.Series) -> bool:
    sample = cells[cells.str.contains(r"\d", regex=True)].iloc[:1000]
    return len(cells) > 0 and seconds(sample).notna().sum() >= DATE_SHARE * min(len(cells), 1000)


# --- column types -----------------------------------------------------------------------
def column_kind(
    name: str, column: pd.Series, rules: TableRules, random_split: bool
) -> tuple[str, list[Finding]]:
    """``numeric``, ``boolean``, ``categorical``, ``date`` or ``drop``, and what was found
    on the way. True/false columns are booleans whether a CSV writes them as words or a
    Parquet file holds them as bools, so the same rows encode alike from either."""
    if pd.api.types.is_datetime64_any_dtype(column):
        kind = "date"
    elif pd.api.types.is_bool_dtype(column):
        return "boolean", []
    elif pd.api.types.is_numeric_dtype(column):
        if not (random_split and counts_time(name, column)):
            return "numeric", []
        kind = "numeric"
    else:
        cells = texts(column).dropna()
        if len(cells) and cells.str.lower().isin(["true", "false"]).all():
            return "boolean", []
        parsed = parse_numbers(cells)
        words = cells[parsed.isna()]
        share = parsed.notna().mean() if len(cells) else 0.0
        tokens = sorted(set(words), key=str)
        if len(words) and parsed.notna().any():
            if share >= 1 - MIXED_SHARE or all(t.lower() in JUNK for t in tokens):
                message = (
                    f"non-numeric cells {tokens[:8]} in a column of numbers "
                    f"({name_rows(words.index)}): read as missing"
                )
                action = rules.junk_values
                return "numeric", [Finding("junk_values", "warning", name, message, action)]
            if share >= MIXED_SHARE:
                message = (
                    f"{share:.0%} numbers and {1 - share:.0%} words (e.g. {tokens[:5]}, "
                    f"{name_rows(words.index)})"
                )
                action = rules.mixed_types
                found = [Finding("mixed_types", "warning", name, message, action)]
                return ("drop" if action == "drop" else "categorical"), found
        if len(cells) and not len(words):
            if not (random_split and counts_time(name, parsed)):
                return "numeric", []
            kind = "numeric"
        else:
            kind = "date" if len(words) and looks_like_dates(words) else "categorical"
    if kind == "categorical":
        return kind, missing_markers(name, words)
    if not random_split:
        return kind, []
    message = (
        f"holds {'dates' if kind == 'date' else 'times'}, and the split is random: rows from "
        "the future train a model evaluated on the past. Split by time with "
        f"--data.init_args.time_column {name}"
    )
    action = rules.timestamp_column
    found = [Finding("timestamp_column", "warning", name, message, action)]
    return ("drop" if action == "drop" else kind), found


def missing_markers(name: str, words: pd.Series) -> list[Finding]:
    """Words that often stand for a missing value (R's "NA"), in a column of categories: kept
    as the category they spell, since in some tables they are one (Ames housing's alley "NA"
    is "no alley"), and said so, because in most they mean missing. A consumer of the export
    then feeds the cell as written."""
    markers = words[words.str.lower().isin(JUNK)]
    if markers.empty:
        return []
    message = (
        f"cells {sorted(set(markers))} ({name_rows(markers.index)}) are kept as a category of "
        "their own; if they mean missing, leave those cells empty in the file"
    )
    return [Finding("missing_marker", "info", name, message)]


def missing_values(typed: pd.DataFrame, action: str) -> list[Finding]:
    findings = []
    for name in typed.columns:
        missing = typed.index[typed[name].isna()]
        if len(missing):
            share = len(missing) / len(typed)
            message = f"{len(missing)} missing ({share:.1%}): {name_rows(missing)}"
            findings.append(Finding("missing_values", "warning", name, message, action))
    return findings


def constant_columns(typed: pd.DataFrame, action: str) -> list[Finding]:
    findings = []
    for name in typed.columns:
        values = typed[name].dropna().unique()
        if len(values) <= 1:
            what = f"every value is {values[0]!r}" if len(values) else "every value is missing"
            message = f"{what}: it can't tell the classes apart"
            findings.append(Finding("constant_column", "warning", name, message, action))
    return findings


def id_like_columns(typed: pd.DataFrame, kinds: dict[str, str], action: str) -> list[Finding]:
    """Whole-number or text columns almost all distinct, or numbers that follow the row order.

    Non-integer floats are distinct by nature (measurements), so uniqueness alone says
    nothing about them.
    """
    findings = []
    for name in typed.columns:
        cells = typed[name].dropna()
        numeric = kinds[name] == "numeric"
        timed = kinds[name] == "date" or (numeric and counts_time(name, cells))
        if len(cells) < MIN_ROWS or timed:
            continue  # a time follows the row order of a file sorted by time
        whole = not numeric or bool((cells == cells.round()).all())
        unique = cells.nunique() / len(cells)
        rho = 0.0
        if numeric and cells.nunique() > 1:
            order = pd.Series(np.arange(len(typed)), index=typed.index)[cells.index]
            rho = float(cells.rank().corr(order.rank()))
        if whole and unique >= ID_UNIQUE:
            message = f"{unique:.0%} of its values are distinct: an identifier, not a feature"
        elif abs(rho) >= ID_RHO:
            message = f"follows the row order (Spearman rho {rho:.3f}): a row counter"
        else:
            continue
        findings.append(Finding("id_like_column", "warning", name, message, action))
    return findings


def nominal_codes(typed: pd.DataFrame, kinds: dict[str, str], labels: np.ndarray) -> list[Finding]:
    """A hint (info) for whole-number columns that look like codes of categories (customer
    types, regions): ``CODE_LEVELS`` or more values, whose label rates matter (chi-squared
    p < 0.001) but don't follow the numbers' order (|Spearman rho| < ``CODE_RHO``). As
    numbers, the network reads code 12 as between 11 and 13. On a real customer table of
    85 coded columns this named its 40 customer types alone; its 10-level columns, bins
    and one 10-level code alike, are below ``CODE_LEVELS``."""
    findings = []
    for name in [n for n in typed.columns if kinds[n] == "numeric"]:
        cells = typed[name].dropna()
        known = typed[name].notna().to_numpy()
        if cells.nunique() < CODE_LEVELS or not (cells == cells.round()).all():
            continue
        counts = pd.crosstab(cells.to_numpy(), labels[known])
        counts = counts[counts.sum(axis=1) >= 5]
        if len(counts) < CODE_LEVELS or counts.shape[1] < 2:
            continue
        rates = counts.div(counts.sum(axis=1), axis=0)
        rho = max(abs(spearmanr(rates.index, rates[c]).statistic) for c in rates.columns)
        if chi2_contingency(counts.to_numpy()).pvalue < 0.001 and rho < CODE_RHO:
            message = (
                f"{cells.nunique()} whole-number values whose label rates don't follow their "
                f"order (|Spearman rho| {rho:.2f}): codes of categories? Then list it in "
                "--data.init_args.categorical"
            )
            findings.append(Finding("nominal_codes", "info", name, message))
    return findings


def robust_z(values: pd.DataFrame, train: np.ndarray) -> pd.DataFrame:
    """Distance of each cell from the training median, in robust standard deviations
    (1.4826 x the median absolute deviation).

    Where most training values are one value (a count or code column, mostly zero), that
    deviation is 0 and any other value would be infinitely far: 30 false warnings on one
    real customer table. There the values off that spike are scored against their own
    median and deviation, the spike's own values at 0; a column whose scale is still 0 (two
    values) gets no scores.
    """
    fitted = values[train]
    center = fitted.median()
    spread = (fitted - center).abs().median()
    z = (values - center).abs() / (1.4826 * spread).where(spread > 0)
    for name in spread.index[spread == 0]:
        off = fitted[name][fitted[name] != center[name]].dropna()
        middle = off.median()
        scale = 1.4826 * (off - middle).abs().median()
        if len(off) >= MIN_ROWS and scale > 0:
            column = values[name]
            z[name] = ((column - middle).abs() / scale).where(column != center[name], 0.0)
    return z


def outliers(values: pd.DataFrame, z: pd.DataFrame, threshold: float, action: str) -> list[Finding]:
    """Cells more than ``threshold`` robust z-scores (see ``robust_z``) from the median."""
    findings = []
    for name in values.columns:
        far = values.index[z[name] > threshold]
        if len(far):
            shown = ", ".join(f"row {r} = {values.loc[r, name]:g}" for r in far[:5])
            more = f" and {len(far) - 5} more" if len(far) > 5 else ""
            message = f"{len(far)} values beyond robust z {threshold:g}: {shown}{more}"
            findings.append(Finding("outliers", "warning", name, message, action))
    return findings


def label_leaks(
    features: pd.DataFrame, labels: np.ndarray, threshold: float, seed: int, action: str
) -> list[Finding]:
    """Columns whose values alone predict the training labels with ROC AUC >= ``threshold``.

    Out-of-fold probabilities of a depth-3 tree on one column at a time: a real signal
    rarely gets near 1 alone (breast cancer's best column: 0.96); an identifier sorted by
    label, or a column derived from it, does. Categories are tried as codes, missing
    numbers as the median.
    """
    if len(labels) > LEAK_ROWS:
        rows = np.random.default_rng(seed).choice(len(labels), LEAK_ROWS, replace=False)
        features, labels = features.iloc[rows], labels[rows]
    counts = np.bincount(labels)
    folds = min(5, int(counts[counts > 0].min()))
    if folds < 2 or (counts > 0).sum() < 2:
        return [Finding("label_leak", "info", "dataset", "skipped: too few rows per class")]
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    tree = DecisionTreeClassifier(max_depth=3, random_state=seed)
    scores = {}
    for name, column in features.items():
        if pd.api.types.is_numeric_dtype(column):
            x = column.fillna(column.median()).fillna(0.0).to_numpy()[:, None]
        else:
            x = pd.factorize(column)[0][:, None]
        proba = cross_val_predict(tree, x, labels, cv=cv, method="predict_proba")
        binary = proba.shape[1] == 2
        scores[name] = roc_auc_score(
            labels, proba[:, 1] if binary else proba, multi_class="ovr", average="macro"
        )
    findings = [
        Finding(
            "label_leak",
            "warning",
            name,
            f"alone predicts the label with ROC AUC {auc:.4f} (out of fold, training split): "
            "a leak of the answer, or a copy of the label",
            action,
        )
        for name, auc in scores.items()
        if auc >= threshold
    ]
    if scores and not findings:
        best = max(scores, key=scores.__getitem__)
        message = f"strongest single column: {best} (ROC AUC {scores[best]:.3f})"
        findings.append(Finding("label_leak", "info", "dataset", message))
    return findings


def row_hashes(frame: pd.DataFrame) -> list[str]:
    """SHA-1 of each row's cells as read: equal rows, equal hashes."""
    rows = frame.astype(object).to_numpy()
    return [hashlib.sha1("\x1f".join(map(str, row)).encode()).hexdigest() for row in rows]
