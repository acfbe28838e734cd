"""The drift measure (PSI over the training profile) and the profile that fit saves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from {{ cookiecutter.package_name }}.data.drift import (
    RecentInputs,
    drift,
    fit_profile,
    histogram,
    psi,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def verdict(train: dict, recent: dict, **kwargs) -> dict:
    return drift(fit_profile(train, **kwargs), recent)


def test_psi_is_the_textbook_formula() -> None:
    value, noise = psi(np.array([50_000, 50_000]), np.array([80_000, 20_000]))
    expected = (0.8 - 0.5) * np.log(0.8 / 0.5) + (0.2 - 0.5) * np.log(0.2 / 0.5)
    assert value == pytest.approx(expected, rel=1e-4)
    assert noise == pytest.approx(1 / 100_000 + 1 / 100_000)
    assert psi(np.array([10, 0, 5]), np.array([10, 0, 5]))[0] == 0.0


def test_noise_is_what_sampling_alone_gives(rng) -> None:
    """Training samples and windows from one distribution: PSI ~ (k - 1)(1/n + 1/N)."""
    values = []
    for _ in range(300):
        spec = fit_profile({"x": rng.normal(size=400)})["features"]["x"]
        values.append(psi(np.array(spec["counts"]), histogram(spec, rng.normal(size=100))))
    noise = 9 * (1 / 100 + 1 / 400)
    assert all(n == pytest.approx(noise) for _, n in values)
    assert np.mean([v for v, _ in values]) == pytest.approx(noise, rel=0.15)


def test_training_like_windows_raise_no_alarm(rng) -> None:
    """Small windows (100 inputs against 400 training rows) of unshifted data: the noise
    allowance keeps false alarms rare, where PSI > 0.2 alone would fire often."""
    train = rng.normal(size=(400, 1))
    profile = fit_profile({"x": train[:, 0]})
    alarms = [drift(profile, {"x": rng.normal(size=100)})["drifted"] for _ in range(500)]
    assert sum(bool(a) for a in alarms) / len(alarms) < 0.01


@pytest.mark.parametrize(("shift", "drifted"), [(0.1, False), (1.0, True), (3.0, True)])
def test_a_mean_shift_drifts_by_its_size(rng, shift: float, drifted: bool) -> None:
    report = verdict({"x": rng.normal(size=5000)}, {"x": rng.normal(shift, size=1000)})
    assert report["status"] == ("drift" if drifted else "ok")
    assert report["features"]["x"]["drifted"] is drifted


def test_only_the_shifted_feature_drifts(rng) -> None:
    train = {name: rng.normal(size=2000) for name in "abc"}
    recent = {name: rng.normal(size=500) for name in "abc"}
    recent["b"] = recent["b"] * 3  # the spread triples
    assert verdict(train, recent)["drifted"] == ["b"]


def test_categories_compare_training_frequencies(rng) -> None:
    train = {"site": rng.choice(["left", "right", "centre"], p=[0.6, 0.3, 0.1], size=3000)}
    same = {"site": rng.choice(["left", "right", "centre"], p=[0.6, 0.3, 0.1], size=500)}
    flipped = {"site": rng.choice(["left", "right", "centre"], p=[0.1, 0.3, 0.6], size=500)}
    unseen = {"site": ["elsewhere"] * 300 + ["left"] * 200}  # outside the vocabulary: "other"
    vocabularies = {"site": ["left", "right", "centre"]}
    assert verdict(train, same, vocabularies=vocabularies)["drifted"] == []
    assert verdict(train, flipped, vocabularies=vocabularies)["drifted"] == ["site"]
    assert verdict(train, unseen, vocabularies=vocabularies)["drifted"] == ["site"]


def test_more_missing_values_are_drift(rng) -> None:
    x = rng.normal(size=2000)
    x[:100] = np.nan  # 5% missing in training
    recent = rng.normal(size=500)
    recent[:200] = np.nan
    assert verdict({"x": x}, {"x": recent})["drifted"] == ["x"]


def test_few_distinct_values_are_profiled_value_by_value() -> None:
    """Image sizes: every training image 8 px wide; 16 px (or 4 px) inputs are drift."""
    profile = fit_profile({"width": np.full(1000, 8.0)})
    assert profile["features"]["width"]["kind"] == "discrete"
    assert drift(profile, {"width": np.full(200, 8.0)})["drifted"] == []
    assert drift(profile, {"width": np.full(200, 16.0)})["drifted"] == ["width"]
    assert drift(profile, {"width": np.full(200, 4.0)})["drifted"] == ["width"]


def test_nothing_is_judged_before_enough_inputs_or_without_a_profile(rng) -> None:
    profile = fit_profile({"x": rng.normal(size=500)})
    early = drift(profile, {"x": rng.normal(5, size=20)}, min_samples=100)
    assert early["status"] == "collecting" and early["drifted"] == []
    missing = drift(None, {"x": rng.normal(size=500)})
    assert missing["status"] == "unavailable" and "no training profile" in missing["message"]


def test_the_window_counts_the_latest_inputs(rng) -> None:
    """Counted as inputs arrive and leave, the window judges as the latest inputs judged
    anew would (what ``serve`` did on every request before)."""
    train = {"x": rng.normal(size=500), "site": rng.choice(["a", "b"], size=500)}
    profile = fit_profile(train, vocabularies={"site": ["a", "b"]})
    window, sent = RecentInputs(profile, 150), {"x": [], "site": []}
    for size in [*rng.integers(1, 40, size=30), 400]:  # the last batch overfills the window
        x = rng.normal(0.5, size=size)
        x[rng.random(size) < 0.1] = np.nan
        batch = {"x": x, "site": rng.choice(["a", "b", "c", None], size=size)}
        window.add(batch)
        for name, values in batch.items():
            sent[name] += list(values)
        assert window.judge(min_samples=50) == drift(
            profile, {name: values[-150:] for name, values in sent.items()}, min_samples=50
        )
    assert window.samples == 150 and window.judge()["status"] != "collecting"
    assert RecentInputs(None, 10).judge()["status"] == "unavailable"


def test_the_profile_is_plain_data(rng, tmp_path) -> None:
    """It travels in the checkpoint: JSON-able, loadable with ``weights_only=True``."""
    profile = fit_profile(
        {"x": rng.normal(size=100), "site": ["a", "b", None] * 10}, vocabularies={"site": ["a"]}
    )
    json.dumps(profile)
    torch.save({"profile": profile}, tmp_path / "state.pt")
    assert torch.load(tmp_path / "state.pt", weights_only=True)["profile"] == profile


def test_fit_profiles_the_training_split_into_the_checkpoint(fitted) -> None:
    datamodule = fitted.datamodule
    profile = datamodule.drift_profile
    training = len(datamodule.prepared.datasets["train"])
    for spec in profile["features"].values():
        assert sum(spec["counts"]) == training
    checkpoint = torch.load(fitted.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint[type(datamodule).__qualname__]["drift_profile"] == profile
