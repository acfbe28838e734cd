"""Cross-validation: folds of the training pool, one fit per fold, the folds' scores and
out-of-fold predictions, and the labels those predictions find implausible.

One ``cv`` run on a copy of the default data with planted label flips is shared by the
tests that read its files (each fold a child process, ~6 s of imports alone); the folds'
rules are checked on the data modules in this process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_digits

from {{ cookiecutter.package_name }} import experiments
from {{ cookiecutter.package_name }}.data.findings import DataError
from {{ cookiecutter.package_name }}.data.state import check_split
from {{ cookiecutter.package_name }}.experiments import cross_validation, launch

from .conftest import CONFIG, datamodule_class

FOLDS = 3
FLIPPED = 0.05  # of the samples, given another class's label
IMAGES = datamodule_class().__name__ == "ImageDataModule"
# Short fits on the CPU that still learn enough for their probabilities to mean something.
FIT = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    f"--trainer.max_epochs={4 if IMAGES else 12}",
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.init_args.profile=false",
]


def flipped_table(root: Path) -> tuple[Path, set[str]]:
    """The breast-cancer table as a CSV file, ``FLIPPED`` of its labels swapped; the ids
    (row numbers, as the data module names rows) of the flipped rows."""
    bunch = load_breast_cancer(as_frame=True)
    names = np.array(bunch.target_names)
    codes = bunch.target.to_numpy().copy()
    flips = np.random.default_rng(0).choice(len(codes), round(FLIPPED * len(codes)), replace=False)
    codes[flips] = 1 - codes[flips]
    path = root / "flipped.csv"
    bunch.data.assign(target=names[codes]).to_csv(path, index=False)
    return path, {str(i) for i in flips}


def flipped_images(root: Path) -> tuple[Path, set[str]]:
    """The digits as a folder of PNG files ``<class>/<n>.png``, ``FLIPPED`` of them in
    another class's folder; the ids (paths in the folder) of the flipped ones."""
    from PIL import Image

    bunch = load_digits()
    rng = np.random.default_rng(0)
    flips = set(rng.choice(len(bunch.target), round(FLIPPED * len(bunch.target)), replace=False))
    flipped = set()
    for n, (pixels, label) in enumerate(zip(bunch.images, bunch.target, strict=True)):
        if n in flips:
            label = (label + rng.integers(1, 10)) % 10
            flipped.add(f"{label}/{n}.png")
        folder = root / "digits" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(pixels * 255 / 16).astype(np.uint8)).save(folder / f"{n}.png")
    return root / "digits", flipped


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """A copy of the default data with planted label flips: its data option, the flips."""
    root = tmp_path_factory.mktemp("flipped")
    if IMAGES:
        folder, flips = flipped_images(root)
        return [f"--data.init_args.root={folder}", "--data.init_args.cache_dir=null"], flips
    path, flips = flipped_table(root)
    return [f"--data.init_args.path={path}"], flips


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory: pytest.TempPathFactory, planted) -> Path:
    """One ``cv`` of the planted data: its experiment directory."""
    root = tmp_path_factory.mktemp("runs")
    options, _ = planted
    args = [f"--config={CONFIG}", f"--folds={FOLDS}", f"--run.root={root}", "--run.name=cv"]
    code = experiments.run("cv", "cv", [*args, "--workers=2", *FIT, *options])
    assert code == 0, (root / "cv" / "logs" / "fold-0.log").read_text()[-3000:]
    return root / "cv"


def manifest(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "split_manifest.csv", dtype={"id": str, "label": str})


def fold_manifests(out: Path) -> list[pd.DataFrame]:
    return [manifest(out / "folds" / str(k)) for k in range(FOLDS)]


def test_every_pool_sample_is_validated_in_exactly_one_fold(cv_run: Path) -> None:
    folds = pd.read_csv(cv_run / "folds.csv", dtype={"id": str})
    manifests = fold_manifests(cv_run)
    pool = set(manifests[0].query("split != 'test'")["id"])
    assert folds["id"].is_unique and set(folds["id"]) == pool
    tested = [set(m.query("split == 'test'")["id"]) for m in manifests]
    assert all(t == tested[0] for t in tested) and not tested[0] & pool  # the same test split
    assert not list(cv_run.glob("folds/*/test_metrics.json"))  # and no fold evaluates on it
    for k, fold in enumerate(manifests):
        held = set(fold.query("split == 'val'")["id"])
        assert held == set(folds.query(f"fold == {k}")["id"])
        assert set(fold.query("split == 'train'")["id"]) == pool - held


def test_scores_and_out_of_fold_predictions_are_complete_and_consistent(cv_run: Path) -> None:
    scores = json.loads((cv_run / "cv_metrics.json").read_text())
    texts = {"id": str, "label": str, "predicted": str}
    oof = pd.read_csv(cv_run / "oof_predictions.csv", dtype=texts)
    classes = [c for c in oof.columns if c not in ("id", "label", "predicted", "fold")]
    assert set(oof["id"]) == set(pd.read_csv(cv_run / "folds.csv", dtype={"id": str})["id"])
    assert np.allclose(oof[classes].sum(axis=1), 1, atol=1e-4)
    assert (oof["predicted"] == oof[classes].idxmax(axis=1)).all()
    for name in ("val/loss", "val/acc", "val/f1_macro"):
        assert len(scores[name]["folds"]) == FOLDS
        assert scores[name]["mean"] == pytest.approx(np.mean(scores[name]["folds"]))
        assert scores[name]["std"] == pytest.approx(np.std(scores[name]["folds"], ddof=1))
    for k in range(FOLDS):  # each fold's accuracy is its out-of-fold predictions' accuracy
        held = oof[oof["fold"] == k]
        accuracy = (held["predicted"] == held["label"]).mean()
        assert scores["val/acc"]["folds"][k] == pytest.approx(accuracy, abs=1e-6)
    figures = {n: f"{s['mean']:.4f} ± {s['std']:.4f}" for n, s in scores.items()}
    print(f"cv scores ({FOLDS} folds): {figures}")


def test_label_issues_find_the_planted_flips(cv_run: Path, planted) -> None:
    _, flips = planted
    issues = pd.read_csv(cv_run / "label_issues.csv", dtype={"id": str, "given": str})
    pool = set(pd.read_csv(cv_run / "folds.csv", dtype={"id": str})["id"])
    planted_here = flips & pool  # flips in the test split are in no fold
    flagged = set(issues["id"])
    found = flagged & planted_here
    precision, recall = len(found) / max(1, len(flagged)), len(found) / len(planted_here)
    print(f"label flips: {len(flagged)} flagged, {len(planted_here)} planted, "
          f"precision {precision:.2f}, recall {recall:.2f}")  # fmt: skip
    assert list(issues["rank"]) == list(range(1, len(issues) + 1))
    assert issues["self_confidence"].is_monotonic_increasing  # the least plausible first
    assert recall >= 0.5 and precision >= 0.5
    if IMAGES:
        assert (cv_run / "label_issues.png").is_file()


def test_finished_folds_are_not_run_again(cv_run: Path, planted, capsys) -> None:
    logs = {p: p.stat().st_size for p in (cv_run / "logs").iterdir()}
    args = [f"--config={CONFIG}", f"--folds={FOLDS}", f"--run.root={cv_run.parent}"]
    assert experiments.run("cv", "cv", [*args, "--run.name=cv", *FIT, *planted[0]]) == 0
    assert f"{FOLDS} fold(s) finished before" in capsys.readouterr().out
    assert {p: p.stat().st_size for p in (cv_run / "logs").iterdir()} == logs


def test_a_stopped_fold_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    fold_dirs = [tmp_path / "folds" / str(k) for k in range(FOLDS)]
    new = cross_validation.fold_command([str(CONFIG)], ["--x=1"], fold_dirs, 1)
    assert "--data.init_args.folds=3" in new and "--data.init_args.fold=1" in new
    assert new[-1] == "--run.name=1" and "--x=1" in new
    fold_dirs[1].mkdir(parents=True)
    (fold_dirs[1] / "config.yaml").write_text("{}")  # a fit began: it resumes
    resumed = cross_validation.fold_command([], [], fold_dirs, 1)
    assert resumed == launch.resume_command(fold_dirs[1])


# --- the folds, on the data modules themselves ----------------------------------------
def folds_of(**options) -> list:
    return [datamodule_class()(profile=False, folds=FOLDS, fold=k, **options) for k in range(FOLDS)]


def splits_of(module) -> pd.DataFrame:
    data = module.prepared
    return pd.DataFrame({"id": data.ids, "split": data.splits})


def grouped(tmp_path: Path) -> tuple[dict, dict[str, str]]:
    """Data options that split by groups of about 10 samples, and each sample's group."""
    if IMAGES:
        groups = {f"digits/{i}": f"writer{i // 10}" for i in range(1797)}
        path = tmp_path / "groups.csv"
        pd.DataFrame({"id": list(groups), "group": list(groups.values())}).to_csv(path, index=False)
        return {"split_by_mapping": path, "cache_dir": None}, groups
    bunch = load_breast_cancer(as_frame=True)
    patients = [f"p{i // 10}" for i in bunch.target.index]
    path = tmp_path / "grouped.csv"
    bunch.data.assign(target=bunch.target, patient=patients).to_csv(path, index=False)
    groups = dict(zip(map(str, bunch.target.index), patients, strict=True))
    return {"path": path, "split_by": "patient"}, groups


def test_a_group_is_in_one_fold_only(tmp_path: Path) -> None:
    options, groups = grouped(tmp_path)
    validated: dict[str, int] = {}
    for k, module in enumerate(folds_of(**options)):
        split = splits_of(module).assign(group=lambda f: f["id"].map(groups))
        held = set(split.query("split == 'val'")["group"])
        assert not held & set(split.query("split == 'train'")["group"])
        for group in held:
            assert validated.setdefault(group, k) == k, f"{group} validated in two folds"
    assert len(set(validated.values())) == FOLDS


@pytest.mark.skipif(IMAGES, reason="images have no time column")
def test_time_folds_train_on_earlier_times_only(tmp_path: Path) -> None:
    bunch = load_breast_cancer(as_frame=True)
    days = np.random.default_rng(1).permutation(len(bunch.target)) // 4  # four rows a day
    times = pd.Timestamp("2024-01-01") + pd.to_timedelta(days, unit="D")
    frame = bunch.data.assign(target=bunch.target, day=times.strftime("%Y-%m-%d"))
    frame.to_csv(tmp_path / "timed.csv", index=False)
    day = dict(zip(map(str, frame.index), times, strict=True))
    modules = folds_of(path=tmp_path / "timed.csv", time_column="day")
    folds = [splits_of(m).assign(time=lambda f: f["id"].map(day)) for m in modules]
    latest_validated = pd.Timestamp.min
    for split in folds:
        train, val = (split.query(f"split == '{s}'")["time"] for s in ("train", "val"))
        test = split.query("split == 'test'")["time"]
        assert train.max() < val.min() and val.max() < test.min()
        assert val.min() > latest_validated  # each fold validates on a later block
        latest_validated = val.max()
    assert len(folds[0].query("split == 'train'")) < len(folds[-1].query("split == 'train'"))


def test_statistics_are_fitted_on_each_folds_training_part() -> None:
    modules = folds_of(**({"cache_dir": None} if IMAGES else {}))
    fitted = []
    for module in modules:
        train = splits_of(module).query("split == 'train'")["id"]
        if IMAGES:
            pixels = load_digits().images[[int(i.split("/")[1]) for i in train]] * 255 / 16
            expected, got = np.round(pixels).mean() / 255, float(module.train_statistics()[0])
        else:
            table = load_breast_cancer(as_frame=True).data
            expected = table.loc[train.astype(int), "mean radius"].median()
            got = module.state["numeric"]["mean radius"]
        assert got == pytest.approx(expected, rel=1e-5)
        fitted.append(got)
    assert len(set(fitted)) == FOLDS  # each fold's own


def test_the_fold_is_part_of_the_split_a_checkpoint_records() -> None:
    first, second, _ = folds_of(**({"cache_dir": None} if IMAGES else {}))
    settings = first.state["split"]["settings"]
    assert (settings["folds"], settings["fold"]) == (FOLDS, 0)
    with pytest.raises(DataError, match=r"data\.init_args\.fold 0 -> 1"):
        check_split(first.state, second.split_of(second.prepared), "fold 0")


@pytest.mark.parametrize(("folds", "fold"), [(None, 0), (3, None), (1, 0), (3, 3)])
def test_fold_options_are_checked(folds, fold) -> None:
    with pytest.raises(ValueError, match="folds"):
        datamodule_class()(folds=folds, fold=fold)
