"""Reading a table: a file as text cells (CSV decoded, its delimiter found and its header
checked, or Parquet), and cells as values (numbers, booleans, dates, categories).

Training, ``profile``, ``predict`` and ``serve`` all read through here, so a cell means the
same wherever it comes from. A file that holds no table of one named column per cell, or a
number no float reads as written, is a DataError naming the file, the line or column, and
what to do.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer

from .findings import DataError, Finding

DELIMITERS = ",;\t|"  # the ones spreadsheets and databases export; sniffed in this order
SNIFF_CHARS = 64_000  # the delimiter is found in the first lines, up to this many characters
SHAPE_ERROR = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
# Cells that mean "no value" in a column of numbers (compared lower-cased and stripped).
JUNK = {"", "?", "-", "--", ".", "n/a", "na", "nan", "null", "none", "nil", "missing", "#n/a"}
EPOCH = pd.Timestamp(0, tz="UTC")
# Commas between thousands, a point before the decimals: "1,001.5", as English-language
# spreadsheets write numbers. Only whole groups of three digits, so "1,5" is no such number.
GROUPED = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
DECIMAL_COMMA = re.compile(r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d*),\d+")  # "1,5", "1.001,5"
BOOLEANS = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0}


def read_table(
    path: Path | None,
    target: str,
    findings: list[Finding] | None = None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
) -> pd.DataFrame:
    """Rows numbered from 0 in file order (see ``columns_named``). CSV cells are read as
    text, so that every type is decided by the typing (``table_checks``), the same way for
    training and prediction; only empty cells are missing. ``delimiter`` None: sniffed from
    the first lines. Columns without a name or a value are left out (a finding appended to
    ``findings``)."""
    if path is None:
        bunch = load_breast_cancer(as_frame=True)
        return bunch.data.assign(**{target: bunch.target.map(dict(enumerate(bunch.target_names)))})
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (data.path and predict_path take CSV or Parquet)")
    if path.suffix == ".parquet":
        table = read_parquet(path).reset_index(drop=True)
    else:
        text = decoded(path, encoding)
        table = columns_named(path, cells(path, text, delimiter or sniffed(text)), findings)
    refuse_duplicates(path, [str(name) for name in table.columns])
    return table.rename(columns=str)


def read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (ValueError, OSError) as error:  # pyarrow's ArrowInvalid and ArrowIOError
        raise DataError(
            f"{path}: not a readable Parquet file ({error}); check that it was written whole, "
            "or give a .csv file"
        ) from error


def decoded(path: Path, encoding: str) -> str:
    """The file's text; a UTF-8 byte order mark (Excel's "CSV UTF-8") is not part of it."""
    raw = path.read_bytes()
    try:
        utf8 = codecs.lookup(encoding).name == "utf-8"
    except LookupError as error:
        raise DataError(f"{path}: unknown encoding {encoding!r}; set data.init_args.encoding "
                        "to one Python knows (e.g. utf-8, cp1252, latin-1)") from error  # fmt: skip
    try:
        text = raw.decode("utf-8-sig" if utf8 else encoding)
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line} is not {encoding} text (byte {raw[error.start]:#04x}); set "
            "data.init_args.encoding to the file's encoding (cp1252 or latin-1 for most "
            "older Windows and Excel exports), or save it as UTF-8"
        ) from error
    if not text.strip():
        raise DataError(
            f"{path}: the file is empty; write a header line naming the columns, then one "
            "line of cells per row"
        )
    return text


def sniffed(text: str) -> str:
    """The delimiter of the first lines (``csv.Sniffer``: the character found equally often
    on each line); a comma when none is, as in a table of a single column."""
    sample = text[:SNIFF_CHARS]
    if len(text) > SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    try:
        found = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","
    return found if found in sample.partition("\n")[0] else ","


def cells(path: Path, text: str, delimiter: str) -> pd.DataFrame:
    """Every line's cells as text, the header line included; a DataError for a line with
    more cells than the header names (fewer are missing cells, as spreadsheets write them)."""
    try:
        return pd.read_csv(
            io.StringIO(text), sep=delimiter, header=None, dtype=str, keep_default_na=False,
            na_values=[""], skip_blank_lines=False, index_col=False,
        )  # fmt: skip
    except pd.errors.ParserError as error:
        shape = SHAPE_ERROR.search(str(error))
        if shape:
            names, line, found = shape.groups()
            raise DataError(
                f"{path}: line {line} has {found} cells, and the header names {names} "
                f"columns; quote cells that hold the delimiter {delimiter!r}, or name every "
                "column in the header"
            ) from error
        raise DataError(
            f"{path}: not a readable CSV table ({error}); check the file's quotes, or set "
            "data.init_args.delimiter"
        ) from error
    except pd.errors.EmptyDataError as error:
        raise DataError(f"{path}: the file is empty; write a header line naming the "
                        "columns, then one line of cells per row") from error  # fmt: skip


def columns_named(path: Path, lines: pd.DataFrame, findings: list[Finding] | None) -> pd.DataFrame:
    """The rows below the header, under its names, numbered from 0 in file order. Lines with
    no value (blank, or only spaces and delimiters) are left out, their numbers with them,
    so that every row keeps its number. A column with neither a name nor a value (a
    delimiter ending every line: a spreadsheet export) is left out with a finding; one with
    values and no name is called ``Unnamed: <position>``, as pandas calls it."""
    header, rows = lines.iloc[0], lines.iloc[1:]
    rows.index = range(len(rows))
    first = rows.iloc[:, 0]
    maybe_blank = rows[first.isna() | first.str.isspace().fillna(False).astype(bool)]
    blank = maybe_blank.apply(lambda column: column.str.strip().fillna("").eq("")).all(axis=1)
    rows = rows.drop(index=blank.index[blank])
    if rows.empty:
        raise DataError(f"{path}: a header and no rows; add the rows below the header line")
    keep, names = [], []
    for position, name in enumerate(header):
        if pd.isna(name) and rows.iloc[:, position].isna().all():
            message = (
                f"column {position + 1} has no name and no values (a delimiter at the end "
                "of every line?): left out"
            )
            if findings is not None:
                findings.append(Finding("empty_column", "info", str(path), message, "drop"))
            continue
        keep.append(position)
        names.append(f"Unnamed: {position}" if pd.isna(name) else name)
    if not keep:
        raise DataError(f"{path}: no column has a name or a value; write a header line "
                        "naming the columns")  # fmt: skip
    table = rows.iloc[:, keep]
    table.columns = names
    return table


def refuse_duplicates(path: Path, names: list[str]) -> None:
    """A DataError for a name given to two columns (pandas would rename one ``a.1``)."""
    for name in dict.fromkeys(n for n in names if names.count(n) > 1):
        where = [str(i + 1) for i, n in enumerate(names) if n == name]
        times = "twice" if len(where) == 2 else f"{len(where)} times"
        raise DataError(
            f"{path}: column {name!r} is named {times} (columns {' and '.join(where)}); give "
            "each column its own name"
        )


def name_rows(rows: Iterable, limit: int = 5) -> str:
    rows = [str(r) for r in rows]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"row{'s' if len(rows) > 1 else ''} {', '.join(rows[:limit])}{more}"


# --- cells as values, for checks and encoding alike ------------------------------------------
def seconds(column: pd.Series) -> pd.Series:
    """Dates as seconds since 1970 (UTC); unparseable cells missing."""
    if not pd.api.types.is_datetime64_any_dtype(column):
        column = pd.to_datetime(column, errors="coerce", format="mixed", utc=True)
    elif column.dt.tz is None:
        column = column.dt.tz_localize("UTC")
    # In the dates' own unit: dates outside 1677-2262 (the 0001-01-01 and 9999-12-31 of
    # database exports) don't fit nanoseconds, which the epoch's unit would impose.
    return (column - EPOCH.as_unit(column.dt.unit)).dt.total_seconds()


def numbers(column: pd.Series, dates: bool = False) -> pd.Series:
    """Floats; junk cells missing. ``dates``: a date column, as seconds."""
    if dates or pd.api.types.is_datetime64_any_dtype(column):
        return seconds(column)
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return column.astype(float)
    if all(cell is None or type(cell) in (int, float) for cell in column):  # JSON numbers
        return column.astype(float)
    return parse_numbers(column)


def parse_numbers(cells: pd.Series) -> pd.Series:
    """Text cells as floats: numbers as Python writes them, or with commas between
    thousands (``GROUPED``); anything else missing. Decimals read back as written."""
    values = pd.to_numeric(cells, errors="coerce").astype(float)
    unread = values.isna() & cells.notna()
    if not unread.any():
        return values
    failed = texts(cells[unread]).dropna()
    grouped = failed[failed.map(lambda cell: GROUPED.fullmatch(cell) is not None)]
    if len(grouped):
        values[grouped.index] = pd.to_numeric(grouped.str.replace(",", "", regex=False))
    return values


def booleans(column: pd.Series) -> pd.Series:
    """True and false (any case; 1 and 0) as 1.0 and 0.0; anything else missing."""
    if pd.api.types.is_bool_dtype(column):
        return column.astype(float)
    words = texts(column).map(str.lower, na_action="ignore")
    return words.map(BOOLEANS).astype(float)


def texts(column: pd.Series) -> pd.Series:
    """Categories as stripped strings, whole numbers without ".0"; empty cells missing."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        as_text = [str(int(v)) if float(v).is_integer() else repr(float(v)) for v in column]
        return pd.Series(as_text, index=column.index, dtype=object).where(column.notna())
    present = column.astype(object).where(column.notna())
    stripped = present.map(lambda cell: str(cell).strip() or np.nan, na_action="ignore")
    return stripped.astype(object)


def refuse_decimal_commas(source: str, name: str, column: pd.Series) -> None:
    """A DataError for a column of numbers written with a decimal comma: is "1,5" 1.5 or
    15, and is "1,001" 1001 or 1.001? Either reading could silently change a value."""
    cells = texts(column).dropna()
    words = cells[parse_numbers(cells).isna()]
    comma = words.map(lambda cell: DECIMAL_COMMA.fullmatch(cell) is not None).astype(bool)
    if comma.any() and set(words[~comma].str.lower()) <= JUNK:
        shown = [words.loc[r] for r in words.index[comma][:3]]
        raise DataError(
            f"{source}: column {name!r} writes numbers with a decimal comma ({shown}, "
            f"{name_rows(words.index[comma])}); convert them to a decimal point ('1.5'), "
            "with commas only between thousands, or list the column in "
            "data.init_args.categorical if they are names"
        )


def refuse_infinite(source: str, name: str, cells: pd.Series, values: pd.Series) -> None:
    """A DataError naming the cells of ``values`` too large for a float ("inf", "1e400"):
    no model can take them, and no median may silently stand in for them."""
    rows = values.index[np.isinf(values.to_numpy(np.float64, na_value=np.nan))]
    if len(rows):
        shown = ", ".join(repr(cells.loc[r]) for r in rows[:5])
        raise DataError(
            f"{source}: column {name!r} holds numbers no float holds ({name_rows(rows)}: "
            f"{shown}); write a finite number, leave the cell empty for a missing value, "
            "or list the column in data.init_args.categorical if these are names"
        )
