"""Tabular classification data: a CSV/Parquet file, or scikit-learn's breast-cancer table;
checked, cleaned, split by the seed or by time, and encoded by one fitted definition."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch.utils.data import Dataset, TensorDataset

from .base import CheckedDataModule, Prepared
from .checks import (
    class_imbalance,
    cross_split_duplicates,
    group_keys,
    imbalance_remedy,
    within_split_duplicates,
)
from .drift import fit_profile
from .findings import DataError, Finding
from .loading import BatchSize, Fraction, GroupSize, Prefetch, Workers
from .manifest import fingerprint
from .split import (
    SPLITS,
    Split,
    fold_splits,
    group_split,
    stratified_split,
    time_split,
)
from .table_checks import (
    TableRules,
    column_kind,
    constant_columns,
    id_like_columns,
    label_leaks,
    missing_values,
    nominal_codes,
    outliers,
    robust_z,
    row_hashes,
)
from .table_encoding import (
    check_columns,
    encode,
    encode_records,
    fit_encoding,
    fitted_kind,
    typed_column,
)
from .table_profile import histograms, missing_map
from .table_reading import (
    DELIMITERS,
    name_rows,
    read_table,
    refuse_decimal_commas,
    refuse_infinite,
    texts,
)
from .time_checks import counts_time, label_shift, parse_times, time_order

EMBEDDED = "embedded breast cancer"


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
        encoding: str = "utf-8",
        delimiter: str | None = None,
        time_column: str | None = None,
        group_column: str | None = None,
        split_by: str | None = None,
        max_group_gap: float = 0.05,
        min_group_size: GroupSize = 30,
        predict_path: Path | None = None,
        categorical: list[str] | None = None,
        max_categories: int = 50,
        rules: TableRules = TableRules(),  # noqa: B008 (a frozen default, read only)
        leak_auc: float = 0.99,
        outlier_threshold: float = 50.0,
        profile: bool = True,
        seed: int = 42,
        val_fraction: Fraction = 0.15,
        test_fraction: Fraction = 0.15,
        folds: int | None = None,
        fold: int | None = None,
        batch_size: BatchSize = 32,
        num_workers: Workers = "auto",
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: Prefetch = None,
        fitted_from: Path | None = None,
    ) -> None:
        """
        Args:
            path: CSV or Parquet file; None uses the embedded breast-cancer table.
            target: Label column.
            encoding: Of the CSV files (``path``, ``predict_path``); a UTF-8 byte order mark
                is skipped. Older Windows and Excel exports are often ``cp1252``.
            delimiter: Between the cells of a CSV line; None: found in the first lines
                (one of , ; tab |).
            time_column: Split by this column's times (the latest rows test, the ones before
                them validation) instead of at random; never a feature.
            group_column: Each row's group (e.g. a sensitive attribute): ``test`` reports each
                group's metrics and the largest gap between groups; never a feature.
            split_by: Keep the rows of each value of this column (a patient, customer or
                session) in one split, so no one's rows are in training and test at once;
                stratified as far as whole groups allow; never a feature. Empty cells form
                one group.
            max_group_gap: Largest difference of a test metric between two groups before
                ``test`` flags it.
            min_group_size: Test samples a group needs before its metrics can decide the gap.
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
            folds: Cross-validation (``cv`` sets it): the test split stays as without it,
                the other rows are cut into this many folds (stratified and seeded; of whole
                ``split_by`` groups; by ``time_column``: the rows in time order cut into
                folds + 1 blocks, fold k validating on block k + 1 and training on the
                blocks before it); ``val_fraction`` is then unused.
            fold: The fold validated on (0-based); the other folds train.
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
            min_group_size, folds, fold,
        )  # fmt: skip
        self.path, self.target, self.time_column = path, target, time_column
        self.encoding, self.delimiter = encoding, delimiter
        self.group_column, self.split_by = group_column, split_by
        self.predict_path, self.categorical = predict_path, categorical or []
        self.max_categories, self.rules = max_categories, rules
        self.leak_auc, self.outlier_threshold = leak_auc, outlier_threshold

    def prepare(self) -> Prepared:
        rules, source, findings = self.rules, str(self.path or EMBEDDED), []
        frame = read_table(self.path, self.target, findings, self.encoding, self.delimiter)
        rows_read, columns_read = frame.shape
        frame, labels, labeling = self.labeled_rows(frame)
        findings += labeling
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
        if not self.time_column and not self.split_by:  # a random split: may cut groups
            keyed = {name: typed[name] for name in kinds if kinds[name] != "date"}
            findings += group_keys(keyed, codes, rules.group_key)
        for name, times in self.time_like(frame, typed, kinds).items():
            findings += label_shift(name, times, codes, class_names, bool(self.time_column))
        ids = np.array([str(i) for i in frame.index], dtype=object)
        split_groups = self.split_groups(frame)
        splits = self.split(frame, codes, ids, findings, class_names, split_groups)
        train = splits == "train"
        numeric = [name for name in features if kinds[name] == "numeric"]
        findings += nominal_codes(typed.loc[train, numeric], kinds, codes[train])
        z = robust_z(typed[numeric], train)
        extremes = outliers(typed[numeric], z, self.outlier_threshold, rules.outliers)
        use = ~(z > self.outlier_threshold).any(axis=1).to_numpy() | (rules.outliers != "drop")
        use &= splits != ""  # a time fold's later blocks
        hashes = row_hashes(frame[features])
        copies = cross_split_duplicates(ids, hashes, codes, splits, rules.duplicate_across_splits)
        findings += extremes + copies + within_split_duplicates(ids, hashes, codes, class_names)
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
            groups, None if split_groups is None else split_groups[use].tolist(),
        )  # fmt: skip

    def time_like(
        self, frame: pd.DataFrame, typed: pd.DataFrame, kinds: dict[str, str]
    ) -> dict[str, pd.Series]:
        """The time column and the features that hold times (dates, years), as sortable values."""
        timed = {
            name: typed[name]
            for name, kind in kinds.items()
            if kind == "date" or (kind == "numeric" and counts_time(name, typed[name]))
        }
        if self.time_column:
            timed[self.time_column] = parse_times(frame[self.time_column])
        return timed

    def labeled_rows(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, list]:
        """The rows with a label; a DataError when a named column is not in the table."""
        named = [self.target, *self.non_features(), *self.categorical]
        absent = [name for name in named if name not in frame.columns]
        if absent:
            what = "target column" if absent[0] == self.target else "column"
            joined = [d for d in DELIMITERS if len(frame.columns) == 1 and d in frame.columns[0]]
            hint = (
                f" Is {joined[0]!r} the file's delimiter? Set data.init_args.delimiter to it, "
                "or to null to detect it."
            ) if joined else ""  # fmt: skip
            raise DataError(
                f"{self.path or EMBEDDED}: no {what} {absent[0]!r}; columns are "
                f"{list(frame.columns)}. Name the table's columns in data.init_args.{hint}"
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
        source = str(self.path or EMBEDDED)
        for name in frame.columns.drop([self.target, *self.non_features()]):
            if name in self.categorical:
                kinds[name] = "categorical"
                continue
            refuse_decimal_commas(source, name, frame[name])
            kinds[name], more = column_kind(name, frame[name], self.rules, not self.time_column)
            found += more
        typed = pd.DataFrame(
            {name: typed_column(frame[name], kind) for name, kind in kinds.items()},
            index=frame.index,
        )
        for name in [n for n, kind in kinds.items() if kind == "numeric"]:
            refuse_infinite(source, name, frame[name], typed[name])
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
        return [name for name in (self.time_column, self.group_column, self.split_by) if name]

    def split_groups(self, frame: pd.DataFrame) -> np.ndarray | None:
        """Each row's value of ``split_by`` as text, or None without one."""
        if self.split_by is None:
            return None
        if self.time_column:
            raise DataError(
                f"data.init_args.time_column ({self.time_column!r}) and split_by "
                f"({self.split_by!r}) each decide the split: set one of them"
            )
        return texts(frame[self.split_by]).fillna("(missing)").to_numpy(dtype=object)

    def split(
        self,
        frame: pd.DataFrame,
        codes: np.ndarray,
        ids: np.ndarray,
        findings: list[Finding],
        class_names: list[str],
        groups: np.ndarray | None = None,
    ) -> np.ndarray:
        """Each row's split: by ``time_column`` (its order checked), else seeded, stratified
        (whole ``groups`` when given); with ``folds``, then the fold's (see ``fold_splits``)."""
        times = None
        if self.time_column:
            times = parse_times(frame[self.time_column]).to_numpy()
            parts = time_split(times, self.val_fraction, self.test_fraction)
        elif groups is not None:
            parts = group_split(codes, groups, self.val_fraction, self.test_fraction, self.seed)
        else:
            parts = stratified_split(
                codes, self.val_fraction, self.test_fraction, self.seed, class_names
            )
        splits = np.empty(len(frame), dtype=object)
        for name, part in zip(SPLITS, parts, strict=True):
            splits[part] = name
        if self.folds is not None:
            splits = fold_splits(splits, codes, self.fold, self.folds, self.seed, groups, times)
        if self.time_column:
            findings += time_order(times, splits, ids)
        return splits

    def split_settings(self) -> dict[str, Any]:
        return {
            **super().split_settings(),
            "time_column": self.time_column,
            "split_by": self.split_by,
        }

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
        where = str(self.predict_path)
        frame = read_table(self.predict_path, self.target, None, self.encoding, self.delimiter)
        check_columns(frame.columns, self.state, where, extra=True)
        for name in self.state["columns"]:
            if fitted_kind(self.state, name) == "numeric":
                refuse_infinite(where, name, frame[name], typed_column(frame[name], "numeric"))
        x = encode(frame, self.state)
        return TensorDataset(x, torch.full((len(x),), -1)), [str(i) for i in frame.index]

    def held_out_inputs(self, count: int) -> list[dict[str, Any]]:
        """Up to ``count`` held-out rows (validation, then test) as ``serve`` takes them."""
        return self.rows_of(("val", "test"), count)[0]

    def validation_inputs(self, count: int) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Up to ``count`` validation rows as ``serve`` takes them, and their class codes."""
        return self.rows_of(("val",), count)

    def rows_of(self, splits: Sequence[str], count: int) -> tuple[list[dict], np.ndarray]:
        data = self.prepared
        kept = [i for i, split in enumerate(data.splits) if split in splits]
        kept = sorted(kept, key=lambda i: splits.index(data.splits[i]))[:count]
        table = read_table(self.path, self.target, None, self.encoding, self.delimiter)
        records = table.loc[[int(data.ids[i]) for i in kept], self.state["columns"]]
        codes = [self.class_names.index(data.labels[i]) for i in kept]
        return records.to_dict("records"), np.array(codes, dtype=np.int64)

    def raw_inputs(self) -> Any:
        from ..export_table import TableExport  # the export's side, read when exporting

        return TableExport(self.state)

    def convert_inputs(self, records: Sequence) -> tuple[torch.Tensor, dict[str, pd.Series]]:
        return encode_records(records, self.state)

    def profile_figures(self) -> dict[str, Figure]:
        _ = self.prepared  # preparing records the training rows as profile_table
        table = self.profile_table
        return {"histograms": histograms(table), "missing_values": missing_map(table)}


def dropped_columns(findings: list[Finding]) -> dict[str, str]:
    return {f.subject: f.check for f in findings if f.action == "drop"}
