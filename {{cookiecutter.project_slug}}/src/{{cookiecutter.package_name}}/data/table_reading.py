"""Reading a table file as text cells: CSV decoded, its delimiter found and its header
checked, or Parquet. Training, ``predict`` and ``profile`` read through here; a file that
holds no table of one named column per cell is a DataError naming the file and the line."""

from __future__ import annotations

import codecs
import csv
import io
import re
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_breast_cancer

from .findings import DataError, Finding

DELIMITERS = ",;\t|"  # the ones spreadsheets and databases export; sniffed in this order
SNIFF_CHARS = 64_000  # the delimiter is found in the first lines, up to this many characters
SHAPE_ERROR = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


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
    valued = rows.apply(lambda column: column.str.strip().fillna("").ne(""))
    rows = rows[valued.any(axis=1)]
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
