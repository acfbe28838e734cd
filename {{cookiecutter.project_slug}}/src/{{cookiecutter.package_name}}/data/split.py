"""Train/val/test splits: seeded and stratified (of whole groups, when groups must not be
split), as given by the data, or ordered in time; and the folds of cross-validation."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from itertools import pairwise
from typing import Literal

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from .findings import DataError

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")  # the order of split index tuples


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must each lie "
            "in (0, 1) and leave room for training data"
        )


def holdout(
    indices: np.ndarray,
    labels: np.ndarray,
    fraction: float,
    seed: int,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) with the class balance of ``labels[indices]`` in both; a DataError
    naming the classes (by ``class_names[code]``) too small to be in both."""
    try:
        return train_test_split(
            indices, test_size=fraction, stratify=labels[indices], random_state=seed
        )
    except ValueError as error:  # e.g. a class with a single sample can't be stratified
        codes, sizes = np.unique(labels[indices], return_counts=True)
        names = [class_names[c] if class_names is not None else c for c in codes.tolist()]
        counts = dict(zip(names, sizes.tolist(), strict=True))
        lone = [repr(name) for name, size in counts.items() if size < 2]
        reason = str(error)
        if lone:
            which = f"class {lone[0]} has" if len(lone) == 1 else f"classes {', '.join(lone)} have"
            reason = (
                f"{which} 1 sample, and a stratified split needs at least 2 of each class; "
                "add samples of it, or remove its rows"
            )
        raise DataError(f"Can't split {len(indices)} samples ({counts}): {reason}") from error


def stratified_split(
    labels: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return disjoint (train, val, test) index arrays with the class balance of ``labels``
    (class codes; ``class_names`` name them in errors).

    The test split is cut first so that changing ``val_fraction`` never moves a sample
    into or out of the test set.
    """
    check_fractions(val_fraction, test_fraction)
    rest, test = holdout(np.arange(len(labels)), labels, test_fraction, seed, class_names)
    train, val = holdout(rest, labels, val_fraction / (1 - test_fraction), seed, class_names)
    return np.sort(train), np.sort(val), np.sort(test)


# A group split deals whole groups into this many folds (fewer with fewer groups) and gives
# each split whole folds: fractions in steps of 5%, the test folds fixed by the seed alone.
GROUP_FOLDS = 20


def group_split(
    labels: np.ndarray,
    groups: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) index arrays with every group in one split, each split's class
    balance as close to the whole's as whole groups allow. The first folds are test, so that
    changing ``val_fraction`` never moves a sample into or out of the test set."""
    check_fractions(val_fraction, test_fraction)
    test, val, train = group_folds(labels, groups, [test_fraction, val_fraction], seed)
    return train, val, test


def group_folds(
    labels: np.ndarray, groups: np.ndarray, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Sorted index arrays of about each of ``fractions`` of the samples, then the rest, made
    of whole groups by scikit-learn's StratifiedGroupKFold (seeded); each part at least one
    fold."""
    count = len(np.unique(groups))
    if count < len(fractions) + 1:
        raise DataError(
            f"Can't split {count} group(s) into {len(fractions) + 1} splits of whole groups; "
            f"a group split needs at least {len(fractions) + 1} groups (one per split): add "
            "samples of other groups, or don't split by groups"
        )
    folds, taken, bounds = min(GROUP_FOLDS, count), 0, []
    for left, fraction in zip(range(len(fractions), 0, -1), fractions, strict=True):
        taken += min(max(1, round(fraction * folds)), folds - taken - left)
        bounds.append(taken)
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class rarer than the folds is stratified as it can be
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        parts = [held for _, held in splitter.split(np.zeros(len(labels)), labels, groups)]
    edges = [0, *bounds, folds]
    return [np.sort(np.concatenate(parts[a:b])) for a, b in pairwise(edges)]


def assign_splits(
    labels: np.ndarray,
    given: Sequence[str | None],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    class_names: Sequence[str] | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """The split of every sample: as ``given``, the seed deciding where ``given`` is None
    (keeping each of ``groups`` in one split, when given).

    With no test samples given, the seed cuts all three splits from the undecided samples;
    with a given test split (a torchvision test set, a ``test`` folder) it cuts only
    ``val_fraction`` of them for validation.
    """
    check_fractions(val_fraction, test_fraction)
    splits = np.array([s or "" for s in given], dtype=object)
    pool = np.flatnonzero(splits == "")
    if len(pool) and groups is not None:
        tested = "test" in splits
        fractions = [val_fraction] if tested else [test_fraction, val_fraction]
        parts = group_folds(labels[pool], groups[pool], fractions, seed)
        names = ["val", "train"] if tested else ["test", "val", "train"]
        for name, part in zip(names, parts, strict=True):
            splits[pool[part]] = name
    elif len(pool) and "test" in splits:
        train, val = holdout(pool, labels, val_fraction, seed, class_names)
        splits[train], splits[val] = "train", "val"
    elif len(pool):
        for name, part in zip(
            SPLITS,
            stratified_split(labels[pool], val_fraction, test_fraction, seed, class_names),
            strict=True,
        ):
            splits[pool[part]] = name
    return splits


def time_cuts(ordered: np.ndarray, targets: Sequence[int]) -> list[int]:
    """Each target position in the sorted ``ordered`` times moved to the nearest place
    between two different times (leaving places for the cuts after it), so that rows of one
    timestamp (a day, a year) never sit on both sides of a cut. Equal targets stay equal
    (an empty part); a part asked for gets at least one timestamp, or a DataError says
    there are too few distinct times."""
    n = len(ordered)
    edges = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    wanted = [0 < t < n and (i == 0 or t != targets[i - 1]) for i, t in enumerate(targets)]
    cuts: list[int] = []
    for i, target in enumerate(targets):
        floor = cuts[-1] if cuts else 0
        if not wanted[i]:
            cuts.append(min(max(target, floor), n))
            continue
        later = sum(wanted[i + 1 :])
        options = edges[edges > floor]
        options = options[: max(len(options) - later, 0)]
        if not len(options):
            raise DataError(
                f"{len(edges) + 1} distinct times can't be cut into {len(targets) + 1} parts "
                "without splitting the rows of one time: use fewer parts or finer times"
            )
        cuts.append(int(options[np.argmin(np.abs(options - target))]))
    return cuts


def time_split(
    times: np.ndarray, val_fraction: float, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) by time: the latest rows test, the ones before them validation,
    each cut between two different times (see :func:`time_cuts`): every training row is
    earlier than every validation row, and every validation row than every test row."""
    check_fractions(val_fraction, test_fraction)
    order = np.argsort(times, kind="stable")
    n = len(order)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    cuts = time_cuts(times[order], [n - n_test - n_val, n - n_test])
    train, val, test = np.split(order, cuts)
    return np.sort(train), np.sort(val), np.sort(test)


def check_folds(folds: int | None, fold: int | None) -> None:
    """Both or neither, at least 2 folds, ``fold`` one of them (0-based)."""
    if folds is None and fold is None:
        return
    if folds is None or fold is None or folds < 2 or not 0 <= fold < folds:
        raise ValueError(
            f"data folds ({folds}) and fold ({fold}) go together: at least 2 folds, and "
            "fold from 0 to folds - 1 (the fold validated on; `cv` sets both)"
        )


def pool_folds(
    labels: np.ndarray,
    folds: int,
    seed: int,
    groups: np.ndarray | None = None,
    times: np.ndarray | None = None,
) -> np.ndarray:
    """The validation fold of each sample of the training pool, 0 to ``folds`` - 1.

    Stratified and seeded (StratifiedKFold); of whole groups with ``groups``
    (StratifiedGroupKFold); with ``times``, forward chaining: the pool in time order is cut
    into ``folds`` + 1 blocks, as equal as whole timestamps allow; block k + 1 is fold k,
    and the first block, -1 here, is trained on in every fold and validated in none.
    """
    if times is not None:
        order = np.argsort(times, kind="stable")
        sizes = [len(part) for part in np.array_split(order, folds + 1)]
        cuts = time_cuts(times[order], np.cumsum(sizes)[:-1].tolist())
        held = np.empty(len(times), dtype=int)
        for block, part in enumerate(np.split(order, cuts)):
            held[part] = block - 1
        return held
    zeros = np.zeros(len(labels))
    if groups is not None and len(np.unique(groups)) < folds:
        raise DataError(
            f"Can't deal {len(np.unique(groups))} group(s) into {folds} folds of whole groups: "
            "use fewer folds, or don't split by groups"
        )
    splitter = (
        StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        if groups is not None
        else StratifiedKFold(folds, shuffle=True, random_state=seed)
    )
    held = np.empty(len(labels), dtype=int)
    with warnings.catch_warnings():  # a class rarer than the folds is stratified as it can be
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        try:
            for k, (_, part) in enumerate(splitter.split(zeros, labels, groups)):
                held[part] = k
        except ValueError as error:  # e.g. fewer samples than folds
            raise DataError(f"Can't cut {len(labels)} samples in {folds} folds: {error}") from None
    return held


def fold_splits(
    splits: np.ndarray,
    labels: np.ndarray,
    fold: int,
    folds: int,
    seed: int,
    groups: np.ndarray | None = None,
    times: np.ndarray | None = None,
) -> np.ndarray:
    """The splits of fold ``fold``: the test split as ``splits`` has it, fold ``fold`` of
    the rest (see :func:`pool_folds`) validation, the other folds training. With ``times``
    only the blocks before the validated one train; later ones are "" (not used)."""
    pool = np.flatnonzero(splits != "test")
    part = [None if a is None else a[pool] for a in (groups, times)]
    held = pool_folds(labels[pool], folds, seed, *part)
    chosen = np.array(splits, dtype=object)
    later = held > fold if times is not None else np.zeros(len(pool), dtype=bool)
    chosen[pool] = np.where(held == fold, "val", np.where(later, "", "train"))
    return chosen
