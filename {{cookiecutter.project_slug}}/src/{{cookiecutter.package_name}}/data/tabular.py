"""Tabular classification data: a CSV/Parquet file, or scikit-learn's breast-cancer table;
checked, cleaned, split by the seed or by time, and encoded by one fitted definition."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from sklearn.datasets import load_breast_cancer
from torch.utils.data import Dataset, TensorDataset

from .base import CheckedDataModule, InputError, Prepared
from .checks import (
    class_imbalance,
    cross_split_duplicates,
    imbalance_remedy,
    within_split_duplicates,
)
from .drift import fit_profile
from .findings import DataError, Finding
from .loading import Workers
from .manifest import fingerprint
from .split import SPLITS, Split, stratified_split, time_split
from .table_checks import (
    TableRules,
    column_kind,
    constant_columns,
    id_like_columns,
    label_leaks,
    missing_values,
    name_rows,
    numbers,
    outliers,
    parse_times,
    robust_z,
    row_hashes,
    texts,
    time_order,
)

EMBEDDED = "embedded breast cancer"


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


class TabularDataModule(CheckedDataModule):
    """Rows split by a seed (stratified) or by time into train/val/test.

    Columns are typed, checked and encoded with a state fitted on the training split
    (medians, vocabularies, dropped columns) and saved in checkpoints, so ``predict`` needs
    none of the training data. Standardisation is done by the model, with statistics from
    :meth:`train_statistics`, so that serving sees the same preprocessing.
    """

    serving_input = "records"

    def __init__(
        self,
        path: Path | None = None,
        target: str = "target",
        time_column: str | None = None,
        group_column: str | None = None,
        max_group_gap: float = 0.05,
        predict_path: Path | None = None,
        categorical: list[str] | None = None,
        max_categories: int = 50,
        rules: TableRules = TableRules(),  # noqa: B008 (a frozen default, read only)
        leak_auc: float = 0.99,
        outlier_threshold: float = 50.0,
        profile: bool = True,
        seed: int = 42,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        batch_size: int = 32,
        num_workers: Workers = "auto",
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        fitted_from: Path | None = None,
    ) -> None:
        """
        Args:
            path: CSV or Parquet file; None uses the embedded breast-cancer table.
            target: Label column.
            time_column: Split by this column's times (the latest rows test, the ones before
                them validation) instead of at random; never a feature.
            group_column: Each row's group (e.g. a sensitive attribute): ``test`` reports each
                group's metrics and the largest gap between groups; never a feature.
            max_group_gap: Largest difference of a test metric between two groups before
                ``test`` flags it.
            predict_path: A CSV/Parquet table for ``predict``; its label column is ignored.
            categorical: Columns to treat as categories even when they hold numbers; by
                default, columns that aren't numbers are.
            max_categories: Categories kept per column, the most frequent in training; the
                rest share an "unknown" slot with categories unseen in training.
            rules: What ``fit`` does about each check's findings (see ``profile.json``).
            leak_auc: ROC AUC at which one column alone predicting the label is a leak.
            outlier_threshold: Robust z-score (median, MAD) beyond which a value is an outlier.
            profile: Write ``profile.json`` and pictures of the data at the start of ``fit``.
            seed: Fixes the split; LightningCLI links it to ``seed_everything``.
            val_fraction: Share of all rows held out for validation.
            test_fraction: Share of all rows held out for the final test.
            batch_size: Rows per batch (per device under DDP).
            num_workers: Loader worker processes; "auto": none when training on the CPU, the
                spare CPUs per GPU otherwise (see ``loader.json`` in the run directory).
            pin_memory: Page-locked host memory for faster host-to-GPU copies; None: when
                training on a CUDA GPU.
            persistent_workers: Keep workers alive between epochs.
            prefetch_factor: Batches each worker loads ahead.
            fitted_from: A checkpoint whose fitted data state (class names, columns, medians,
                vocabularies) to use instead of fitting one; the CLI sets it from ``--ckpt_path``.
        """
        super().__init__(
            seed, val_fraction, test_fraction, batch_size, num_workers, pin_memory,
            persistent_workers, prefetch_factor, profile, fitted_from, max_group_gap,
        )  # fmt: skip
        self.path, self.target, self.time_column = path, target, time_column
        self.group_column = group_column
        self.predict_path, self.categorical = predict_path, categorical or []
        self.max_categories, self.rules = max_categories, rules
        self.leak_auc, self.outlier_threshold = leak_auc, outlier_threshold

    def prepare(self) -> Prepared:
        rules, source = self.rules, str(self.path or EMBEDDED)
        frame = read_table(self.path, self.target)
        rows_read, columns_read = frame.shape
        frame, labels, findings = self.labeled_rows(frame)
        kinds, typed, dropped = self.type_columns(frame, findings)
        features = [name for name in kinds if name not in dropped]
        gaps = missing_values(typed[features], rules.missing_values)
        findings += gaps
        if rules.missing_values == "drop" and gaps:
            complete = typed[[f.subject for f in gaps]].notna().all(axis=1)
            frame, typed, labels = frame[complete], typed[complete], labels[complete]

        class_names = sorted(labels.unique())
        if len(class_names) < 2:
            raise DataError(f"{source}: a single class ({class_names}) leaves nothing to learn")
        codes = pd.Categorical(labels, categories=class_names).codes.astype(np.int64)
        ids = np.array([str(i) for i in frame.index], dtype=object)
        splits = self.split(frame, codes, ids, findings)
        train = splits == "train"
        numeric = [name for name in features if kinds[name] == "numeric"]
        z = robust_z(typed[numeric], train)
        extremes = outliers(typed[numeric], z, self.outlier_threshold, rules.outliers)
        use = ~(z > self.outlier_threshold).any(axis=1).to_numpy() | (rules.outliers != "drop")
        hashes = row_hashes(frame[features])
        copies = cross_split_duplicates(ids, hashes, splits, rules.duplicate_across_splits)
        findings += extremes + copies + within_split_duplicates(ids, hashes)
        use &= ~np.isin(ids, [f.subject for f in copies if f.action == "drop"])
        train &= use
        leaks = label_leaks(
            typed.loc[train, features], codes[train], self.leak_auc, self.seed,
            rules.label_leak,
        )  # fmt: skip
        findings += leaks
        dropped |= dropped_columns(leaks)
        features = [name for name in features if name not in dropped]
        if not features or not train.any():
            raise DataError(
                f"{source}: nothing left to train on ({train.sum()} training rows; "
                f"dropped columns {dropped})"
            )

        state = {
            "class_names": class_names,
            "target": self.target,
            "time_column": self.time_column,
            "dropped": dropped,
            **fit_encoding(typed.loc[train], kinds, features, self.max_categories, findings),
        }
        imbalance = class_imbalance(codes[train], class_names, rules.class_imbalance)
        findings.append(imbalance)
        state |= imbalance_remedy(imbalance, codes[train], len(class_names))
        training = {name: typed.loc[train, name] for name in features}
        state["drift_profile"] = fit_profile(training, vocabularies=state["categorical"])
        x, y = encode(frame[use], state), torch.from_numpy(codes[use])
        splits, ids, kept = splits[use], ids[use], codes[use]
        groups = None
        if self.group_column:
            groups = texts(frame[self.group_column][use]).fillna("(missing)").tolist()
        datasets = {s: TensorDataset(x[splits == s], y[splits == s]) for s in SPLITS}
        self.profile_table = typed.loc[train, list(kinds)]
        names = [class_names[c] for c in kept]
        hashes = [h for h, u in zip(hashes, use, strict=True) if u]
        counts = {
            "source": source,
            "rows": rows_read,
            "columns": columns_read,
            "per_split": {s: len(datasets[s]) for s in SPLITS},
            "features": features,
            "encoded_features": x.shape[1],
            "dropped_columns": dropped,
        }
        digest = fingerprint(list(ids), hashes, names)
        return Prepared(
            datasets, codes[train], list(ids), names, list(splits), digest, findings, state, counts,
            groups,
        )  # fmt: skip

    def labeled_rows(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, list]:
        """The rows with a label; a DataError when a named column is not in the table."""
        named = [self.target, *self.non_features(), *self.categorical]
        absent = [name for name in named if name not in frame.columns]
        if absent:
            what = "target column" if absent[0] == self.target else "column"
            raise DataError(
                f"{self.path or EMBEDDED}: no {what} {absent[0]!r}; columns are "
                f"{list(frame.columns)}. Name the table's columns in data.init_args."
            )
        labels, findings = texts(frame[self.target]), []
        if labels.isna().any():
            unlabeled = frame.index[labels.isna()]
            message = f"{len(unlabeled)} rows without a label: {name_rows(unlabeled)}"
            action = self.rules.missing_label
            findings.append(Finding("missing_label", "warning", self.target, message, action))
        return frame[labels.notna()], labels[labels.notna()], findings

    def type_columns(
        self, frame: pd.DataFrame, findings: list[Finding]
    ) -> tuple[dict[str, str], pd.DataFrame, dict[str, str]]:
        """Each feature column's kind, its values as numbers or categories, and the columns
        the typing, constant and identifier checks drop (with the check that dropped them)."""
        kinds: dict[str, str] = {}
        found: list[Finding] = []
        for name in frame.columns.drop([self.target, *self.non_features()]):
            if name in self.categorical:
                kinds[name] = "categorical"
                continue
            kinds[name], more = column_kind(name, frame[name], self.rules, not self.time_column)
            found += more
        typed = pd.DataFrame(
            {name: typed_column(frame[name], kind) for name, kind in kinds.items()},
            index=frame.index,
        )
        dropped = dropped_columns(found)
        kept = [n for n in kinds if n not in dropped]
        constant = constant_columns(typed[kept], self.rules.constant_column)
        dropped |= dropped_columns(constant)
        kept = [n for n in kinds if n not in dropped]
        identifiers = id_like_columns(typed[kept], kinds, self.rules.id_like_column)
        dropped |= dropped_columns(identifiers)
        findings += found + constant + identifiers
        return kinds, typed, dropped

    def non_features(self) -> list[str]:
        """Columns besides the label that the model never sees."""
        return [name for name in (self.time_column, self.group_column) if name]

    def split(
        self, frame: pd.DataFrame, codes: np.ndarray, ids: np.ndarray, findings: list[Finding]
    ) -> np.ndarray:
        """Each row's split: by ``time_column`` (its order checked), else seeded, stratified."""
        if self.time_column:
            times = parse_times(frame[self.time_column]).to_numpy()
            parts = time_split(times, self.val_fraction, self.test_fraction)
        else:
            parts = stratified_split(codes, self.val_fraction, self.test_fraction, self.seed)
        splits = np.empty(len(frame), dtype=object)
        for name, part in zip(SPLITS, parts, strict=True):
            splits[part] = name
        if self.time_column:
            findings += time_order(times, splits, ids)
        return splits

    @property
    def feature_names(self) -> list[str]:
        return self.state["feature_names"]

    def dataset(self, split: Split) -> TensorDataset:
        return self.prepared.datasets[split]

    def train_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature mean and std of the encoded training rows, shaped (F,).

        A feature constant in training (an unknown slot never seen) gets std 1, not 0:
        otherwise one unseen category at prediction would be scaled by 1/eps.
        """
        x = self.prepared.datasets["train"].tensors[0]
        std = x.std(dim=0)
        return x.mean(dim=0), torch.where(std > 0, std, torch.ones_like(std))

    def read_predict_inputs(self) -> tuple[Dataset, list[str]] | None:
        """Rows of ``predict_path``, encoded with the fitted state; extra columns ignored."""
        if self.predict_path is None:
            return None
        frame = read_table(self.predict_path, self.target)
        check_columns(frame.columns, self.state, str(self.predict_path), extra=True)
        x = encode(frame, self.state)
        return TensorDataset(x, torch.full((len(x),), -1)), [str(i) for i in frame.index]

    def convert_inputs(self, records: Sequence) -> tuple[torch.Tensor, dict[str, pd.Series]]:
        """JSON rows ({column: value}) as one batch, encoded as ``predict`` encodes a file's
        rows, and their typed values for the drift monitor. An InputError names the first
        row with a missing or unknown column, and a column holding what isn't a number where
        the model takes numbers (a file's rows get those as missing values).
        """
        cells = []
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise InputError(f"instance {i}: not an object of column: value pairs")
            check_columns(record, self.state, f"instance {i}", extra=False)
            try:
                cells.append({name: as_cell(record[name]) for name in self.state["columns"]})
            except TypeError as error:
                raise InputError(f"instance {i}: {error}") from error
        frame = pd.DataFrame(cells, columns=self.state["columns"], dtype=object)
        typed = {name: typed_column(frame[name], self.kind(name)) for name in frame.columns}
        for name, values in typed.items():
            if name in self.state["categorical"]:
                continue
            bad = frame[name].notna() & ~np.isfinite(values.to_numpy(np.float64, na_value=np.nan))
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                what = "a date" if name in self.state["dates"] else "a finite number"
                value = frame[name].iloc[row]
                raise InputError(f"instance {row}: column {name!r} takes {what}, not {value!r}")
        return encode(frame, self.state), typed

    def kind(self, name: str) -> str:
        """A fitted column's kind: categorical, date or numeric."""
        if name in self.state["categorical"]:
            return "categorical"
        return "date" if name in self.state["dates"] else "numeric"

    def profile_figures(self) -> dict[str, Figure]:
        _ = self.prepared  # preparing records the training rows as profile_table
        table = self.profile_table
        return {"histograms": histograms(table), "missing_values": missing_map(table)}


def typed_column(column: pd.Series, kind: str) -> pd.Series:
    return texts(column) if kind == "categorical" else numbers(column, kind == "date")


def dropped_columns(findings: list[Finding]) -> dict[str, str]:
    return {f.subject: f.check for f in findings if f.action == "drop"}


def histograms(table: pd.DataFrame, limit: int = 30) -> Figure:
    """Distributions of the first ``limit`` numeric columns of the training rows."""
    numeric = [n for n in table.columns if pd.api.types.is_numeric_dtype(table[n])][:limit]
    cols = min(6, max(len(numeric), 1))
    rows = max(1, -(-len(numeric) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, numeric, strict=False):
        ax.axis("on")
        ax.hist(table[name].dropna(), bins=30, color="tab:blue")
        ax.set_title(name, fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle("Training features")
    fig.tight_layout()
    return fig


def missing_map(table: pd.DataFrame, limit: int = 1000) -> Figure:
    """Missing cells (shaded) of up to ``limit`` training rows, evenly spaced."""
    rows = table.iloc[np.linspace(0, len(table) - 1, min(limit, len(table))).astype(int)]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.25 * len(table.columns) + 2), 4))
    ax.imshow(rows.isna().to_numpy(), aspect="auto", cmap="Greys", vmin=0, vmax=1,
              interpolation="nearest")  # fmt: skip
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=90, fontsize=6)
    ax.set(ylabel="training rows", title=f"Missing values ({int(table.isna().sum().sum())} cells)")
    fig.tight_layout()
    return fig
