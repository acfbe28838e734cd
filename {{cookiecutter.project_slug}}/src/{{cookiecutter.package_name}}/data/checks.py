"""Checks every task shares: class balance, exact duplicates across splits, and group keys.

Each check is a plain function from samples to findings; the data modules apply the rules.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from .findings import Finding

# Most/least frequent training class at or above this ratio is worth a remedy. The embedded
# tables sit well below it (breast cancer: 1.7).
IMBALANCE_RATIO = 3.0
MAX_DROPPED_SHARE = 0.05  # copies dropped may shrink a validation or test split by this much
MAX_DROPPED = 5  # ... or by this many samples, whatever their share
GROUP_VALUES = 10  # a key repeats at least this many values; fewer are categories of rows
# How much more often than chance two rows of one value share their label (Cohen's kappa of
# the pairs) before the value looks like one patient or customer rather than a feature.
GROUP_KAPPA = 0.8


def class_imbalance(train_labels: np.ndarray, class_names: Sequence[str], action: str) -> Finding:
    """How unevenly the training split covers the classes; a warning at ``IMBALANCE_RATIO``."""
    counts = np.bincount(train_labels, minlength=len(class_names))
    ratio = counts.max() / max(counts.min(), 1)
    shares = ", ".join(f"{name}: {count}" for name, count in zip(class_names, counts, strict=True))
    if ratio < IMBALANCE_RATIO:
        return Finding("class_imbalance", "info", "dataset", f"training counts: {shares}")
    return Finding(
        "class_imbalance",
        "warning",
        "dataset",
        f"most/least frequent class = {ratio:.1f}x (training counts: {shares}); watch "
        "val/f1_macro rather than accuracy. A remedy (--data.init_args.rules.class_imbalance "
        "class_weights or sampler) can raise it or lower it: compare both on validation",
        action,
    )


def balanced_class_weights(train_labels: np.ndarray, num_classes: int) -> list[float]:
    """``n / (k * count_c)``: every class weighs the same in the loss in total."""
    counts = np.bincount(train_labels, minlength=num_classes).astype(float)
    return (len(train_labels) / (num_classes * np.maximum(counts, 1))).tolist()


def cross_split_duplicates(
    ids: Sequence[str],
    hashes: Sequence[str],
    labels: Sequence[int],
    splits: Sequence[str],
    action: str,
) -> list[Finding]:
    """Validation/test samples whose content and label equal a training sample's: the model
    would be scored on what it trained on (``action``; ``drop`` by default).

    Equal content under another label is a label conflict (see :func:`within_split_duplicates`),
    no leak: it stays. Copies that are more than ``MAX_DROPPED_SHARE`` of a split (and more
    than ``MAX_DROPPED`` samples) are kept too, with one warning beside the data's own rate
    of repeats within training: coarse features repeat by nature (a real customer table of
    40 coded types: 15 % of its training rows), and dropping them would silently reshape
    the split.
    """
    first: dict[str, str] = {}
    seen: dict[str, set] = defaultdict(set)
    for sample, digest, label, split in zip(ids, hashes, labels, splits, strict=True):
        if split == "train":
            first.setdefault(digest, sample)
            seen[digest].add(label)
    copies = [
        (sample, split, first[digest])
        for sample, digest, label, split in zip(ids, hashes, labels, splits, strict=True)
        if split != "train" and seen.get(digest) == {label}
    ]
    sizes, counts = Counter(splits), Counter(split for _, split, _ in copies)
    shares = {s: n / sizes[s] for s, n in counts.items()}
    capped = action == "drop" and any(
        shares[s] > MAX_DROPPED_SHARE and counts[s] > MAX_DROPPED for s in counts
    )
    findings = [
        Finding(
            "duplicate_across_splits",
            "info" if capped else "warning",
            sample,
            f"{split} sample has the same content as training sample {original}",
            "keep" if capped else action,
        )
        for sample, split, original in copies
    ]
    if capped:
        train = Counter(d for d, split in zip(hashes, splits, strict=True) if split == "train")
        repeats = sum(n for n in train.values() if n > 1) / train.total()
        share = ", ".join(f"{s} {shares[s]:.0%}" for s in sorted(shares))
        message = (
            f"{len(copies)} validation/test samples equal a training sample ({share} of those "
            f"splits); dropping them would reshape the splits, so they are kept. Within "
            f"training {repeats:.0%} of the samples repeat: when that rate is as high, equal "
            "samples are distinct records with coarse features, not copies. If they are "
            "copies of one record, deduplicate the data or keep each record in one split "
            "(split_by)"
        )
        findings.append(Finding("duplicate_across_splits", "warning", "dataset", message))
    return findings


def within_split_duplicates(
    ids: Sequence[str], hashes: Sequence[str], labels: Sequence[int], class_names: Sequence[str]
) -> list[Finding]:
    """Repeated content inside the data (info), and a warning for equal samples with
    different labels: label noise, or features that can't tell the classes apart. Those are
    kept wherever they are; they leak nothing, and dropping one would hide the conflict."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, digest in enumerate(hashes):
        groups[digest].append(index)
    repeated = [group for group in groups.values() if len(group) > 1]
    if not repeated:
        return []
    example = ", ".join(ids[i] for i in repeated[0][:3])
    message = f"{len(repeated)} groups of identical samples, e.g. {example}"
    findings = [Finding("duplicate_samples", "info", "dataset", message)]
    conflicting = [g for g in repeated if len({labels[i] for i in g}) > 1]
    if conflicting:
        shown = ", ".join(f"{ids[i]} ({class_names[labels[i]]})" for i in conflicting[0][:4])
        message = (
            f"{len(conflicting)} groups of identical samples carry different labels, e.g. "
            f"{shown}: label noise, or features that can't tell the classes apart; kept"
        )
        findings.append(Finding("label_conflict", "warning", "dataset", message))
    return findings


@dataclass
class CommonRules:
    """Rules every task has. Each field names a check; its value is what ``fit`` does.

    Args:
        duplicate_across_splits: ``drop`` the validation/test copy, ``keep`` it, or ``fail``.
        class_imbalance: ``keep`` (report it), ``class_weights`` in the loss, a balanced
            ``sampler``, or ``fail``; applied only when the imbalance is worth a warning. No
            remedy by default: on two real tables with 3 % and 6 % positives, class weights
            took test accuracy below always answering the majority class.
    """

    duplicate_across_splits: Literal["drop", "keep", "fail"] = "drop"
    class_imbalance: Literal["class_weights", "sampler", "keep", "fail"] = "keep"


def group_keys(columns: Mapping[str, pd.Series], labels: np.ndarray, action: str) -> list[Finding]:
    """Columns whose values repeat across rows, the rows of one value sharing their label far
    more often than two random rows do: one patient's or customer's rows, which a random
    split would put in training and test at once. Numbers count only when whole (measured
    values repeat by chance)."""
    findings = []
    for name, column in columns.items():
        known = column.notna().to_numpy()
        cells, classes = column[known], labels[known]
        if pd.api.types.is_float_dtype(cells) and not (cells == cells.round()).all():
            continue
        sizes = cells.value_counts()
        repeated = sizes[sizes > 1]
        if len(repeated) < GROUP_VALUES or repeated.sum() < len(cells) / 2:
            continue
        chance = float(((np.bincount(classes) / len(classes)) ** 2).sum())
        same = pd.crosstab(cells.to_numpy(), classes).to_numpy()
        agreement = (same * (same - 1)).sum() / (sizes * (sizes - 1)).sum()
        if chance == 1 or (agreement - chance) / (1 - chance) < GROUP_KAPPA:
            continue
        message = (
            f"{len(repeated)} of its values repeat across rows ({repeated.mean():.1f} rows "
            f"each), and rows of one value share their label {agreement:.0%} of the time (two "
            f"random rows: {chance:.0%}): a group key? If a value is one patient, customer or "
            "session, the random split puts its rows in training and test at once; keep each "
            f"in one split with --data.init_args.split_by {name}"
        )
        findings.append(Finding("group_key", "warning", name, message, action))
    return findings


def imbalance_remedy(finding: Finding, train_labels: np.ndarray, num_classes: int) -> dict:
    """The fitted state the imbalance rule asks for: class weights or a balanced sampler."""
    if finding.severity != "warning":
        return {}
    if finding.action == "class_weights":
        return {"class_weights": balanced_class_weights(train_labels, num_classes)}
    return {"balanced_sampler": finding.action == "sampler"}
