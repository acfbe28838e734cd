"""Data shift: how far recent inputs have moved from the training split.

``fit_profile`` summarises each feature of the training split at fit time: a number by its
counts in the training deciles (outer bins open-ended); a number with few distinct values
(image sizes, flags) by the count of each value, plus a slot for any other; a category by
the count of each vocabulary entry, plus a slot for any other; every feature also counts
its missing values. The profile is part of the data module's fitted state, so it travels in
the checkpoint. ``drift`` compares a window of recent inputs with it, feature by feature.

The measure is the population stability index, ``PSI = sum((a - e) * ln(a / e))`` over the
slots, ``e`` and ``a`` the training and recent shares (0.5 added to each count, so that an
empty slot stays finite). By a convention from credit scoring (Siddiqi 2006), widely used in
model monitoring since, PSI under 0.1 is stable, 0.1 to 0.2 a moderate shift, over 0.2 a
major one. The default threshold 0.2 is, for a normal feature, its mean moved by about 0.45
standard deviations, or its spread grown by half.

PSI also grows with sampling noise alone: about ``(k - 1) * (1/n + 1/N)`` for ``k`` slots
that training filled, ``n`` recent inputs and ``N`` training samples (``PSI * n * N / (n + N)``
is nearly chi-squared with ``k - 1`` degrees of freedom). That is 0.11 for 100 inputs against
400 training rows: enough for false alarms on small windows. So a feature drifts when its
PSI exceeds the threshold *plus* that noise level, and nothing is judged before
``min_samples`` inputs have arrived.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

BINS = 10  # training deciles: the usual PSI resolution
THRESHOLD = 0.2  # a major shift by the PSI convention (see the module docstring)
MIN_SAMPLES = 100  # fewer inputs say little about a distribution


def fit_profile(
    features: Mapping[str, Sequence],
    vocabularies: Mapping[str, Sequence[str]] | None = None,
    bins: int = BINS,
) -> dict[str, Any]:
    """The training profile: for each feature, its slots and the training counts in them.

    Args:
        features: Training values by feature name: numbers (NaN missing), or for the
            features named in ``vocabularies``, category texts (None/NaN missing).
        vocabularies: The categories of each categorical feature; any other is "other".
        bins: Quantile bins of a numeric feature; one with at most this many distinct
            values is profiled value by value (image sizes, counts, flags).
    """
    vocabularies = vocabularies or {}
    profile: dict[str, Any] = {}
    for name, values in features.items():
        if name in vocabularies:
            spec = {"kind": "categorical", "values": [str(v) for v in vocabularies[name]]}
        else:
            x = np.asarray(values, dtype=np.float64)
            present = x[~np.isnan(x)]
            distinct = np.unique(present)
            if len(distinct) <= bins:
                spec = {"kind": "discrete", "values": distinct.tolist()}
            else:
                quantiles = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
                spec = {"kind": "numeric", "edges": np.unique(quantiles).tolist()}
        spec["counts"] = histogram(spec, values).tolist()
        profile[name] = spec
    return {"measure": "psi", "features": profile}


def histogram(spec: Mapping[str, Any], values: Sequence) -> np.ndarray:
    """Counts of ``values`` in the slots of one profiled feature (see ``slots``)."""
    return np.bincount(slots(spec, values), minlength=slot_count(spec))


def slot_count(spec: Mapping[str, Any]) -> int:
    known = len(spec["edges"]) + 1 if spec["kind"] == "numeric" else len(spec["values"]) + 1
    return known + 1  # and the missing values'


def slots(spec: Mapping[str, Any], values: Sequence) -> np.ndarray:
    """The slot of each of ``values``: its bin (numbers) or its known value, else the one for
    any other (categories, discrete numbers); the last slot holds missing values."""
    missing_slot = slot_count(spec) - 1
    if spec["kind"] == "categorical":
        slot = {value: i for i, value in enumerate(spec["values"])}
        cells = pd.Series(list(values), dtype=object)
        missing = cells.isna().to_numpy()
        codes = np.array([slot.get(str(v), len(slot)) for v in cells], dtype=np.int64)
        return np.where(missing, missing_slot, codes)
    x = np.asarray(values, dtype=np.float64)
    missing = np.isnan(x)
    if spec["kind"] == "numeric":  # bins (-inf, e0], (e0, e1], ..., (e_last, inf)
        codes = np.searchsorted(np.asarray(spec["edges"]), x, side="left")
    else:
        known = np.asarray(spec["values"], dtype=np.float64)
        index = np.minimum(np.searchsorted(known, x), max(len(known) - 1, 0))
        hit = known[index] == x if len(known) else np.zeros(len(x), dtype=bool)
        codes = np.where(hit, index, len(known))
    return np.where(missing, missing_slot, codes)


def psi(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """PSI of ``actual`` counts against ``expected`` counts, and its no-shift expectation
    ``(k - 1) * (1/n + 1/N)``; slots empty in both are left out."""
    expected, actual = np.asarray(expected, float), np.asarray(actual, float)
    used = (expected + actual) > 0
    e, a = expected[used] + 0.5, actual[used] + 0.5
    e, a = e / e.sum(), a / a.sum()
    slots = int((expected[used] > 0).sum())
    noise = max(slots - 1, 0) * (1 / max(actual.sum(), 1) + 1 / max(expected.sum(), 1))
    return float(np.sum((a - e) * np.log(a / e))), float(noise)


def drift(
    profile: Mapping[str, Any] | None,
    recent_inputs: Mapping[str, Sequence],
    threshold: float = THRESHOLD,
    min_samples: int = MIN_SAMPLES,
) -> dict[str, Any]:
    """Each profiled feature's PSI between the training profile and ``recent_inputs``
    (values by feature name, as ``fit_profile`` takes them), and which features drifted."""
    n = min((len(v) for v in recent_inputs.values()), default=0)
    features = (profile or {}).get("features", {})
    counts = {name: histogram(spec, recent_inputs[name]) for name, spec in features.items()}
    return judge(profile, counts, n, threshold, min_samples)


def judge(
    profile: Mapping[str, Any] | None,
    counts: Mapping[str, np.ndarray],
    n: int,
    threshold: float = THRESHOLD,
    min_samples: int = MIN_SAMPLES,
) -> dict[str, Any]:
    """``drift`` from the slot counts of ``n`` recent inputs."""
    report: dict[str, Any] = {"measure": "PSI", "threshold": threshold, "samples": n}
    if profile is None:
        message = "this checkpoint holds no training profile (saved before drift profiles)"
        return report | {"status": "unavailable", "message": message, "drifted": []}
    if n < min_samples:
        message = f"{n} inputs so far; drift is judged from {min_samples}"
        return report | {"status": "collecting", "message": message, "drifted": []}
    features = {}
    for name, spec in profile["features"].items():
        value, noise = psi(np.asarray(spec["counts"]), counts[name])
        drifted = value - noise > threshold
        features[name] = {"psi": round(value, 4), "noise": round(noise, 4), "drifted": drifted}
    drifted = [name for name, result in features.items() if result["drifted"]]
    status = "drift" if drifted else "ok"
    return report | {"status": status, "drifted": drifted, "features": features}


class RecentInputs:
    """The slots of the last ``size`` inputs of each profiled feature, and their counts.

    Kept incrementally: an input's slot is found once, when it arrives, and counted out when
    it leaves the window, so judging the window costs the slots, not the window's size
    (``serve`` judges after every request)."""

    def __init__(self, profile: Mapping[str, Any] | None, size: int) -> None:
        self.size = size
        self.specs = dict((profile or {}).get("features", {}))
        self.window = {name: deque() for name in self.specs}
        self.counts = {name: np.zeros(slot_count(s), np.int64) for name, s in self.specs.items()}

    @property
    def samples(self) -> int:
        return min((len(window) for window in self.window.values()), default=0)

    def add(self, features: Mapping[str, Sequence]) -> None:
        for name, spec in self.specs.items():
            window, counts = self.window[name], self.counts[name]
            arrived = slots(spec, features[name])[-self.size :]
            np.add.at(counts, arrived, 1)
            window.extend(arrived)
            while len(window) > self.size:
                counts[window.popleft()] -= 1

    def judge(self, threshold: float = THRESHOLD, min_samples: int = MIN_SAMPLES) -> dict:
        """``drift`` of the window (unavailable without a training profile)."""
        profile = {"features": self.specs} if self.specs else None
        return judge(profile, self.counts, self.samples, threshold, min_samples)
