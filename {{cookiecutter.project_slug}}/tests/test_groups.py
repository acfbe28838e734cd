"""Per-group test metrics: each group's scores, the largest gap, and the flag above a limit."""

from __future__ import annotations

import csv
import inspect
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from torchmetrics.classification import MulticlassF1Score

from {{ cookiecutter.package_name }}.data.findings import DataError
from {{ cookiecutter.package_name }}.evaluation import (
    GroupConfusion,
    largest_gaps,
    per_group_table,
)

from .conftest import NO_LOGGER, datamodule_class, run

IMAGES = "group_mapping" in inspect.signature(datamodule_class()).parameters


def grouped_data(tmp_path: Path, rows: list[dict] | None = None) -> list[str]:
    """CLI arguments giving the default data two groups, "even" and "odd" samples.

    Images: a group mapping of the digits' ids; tables: the breast-cancer table written as a
    CSV with a ``site`` column. ``rows`` replaces the mapping's rows (images only).
    """
    if IMAGES:
        path = tmp_path / "groups.csv"
        rows = rows or [
            {"id": f"digits/{i}", "group": "odd" if i % 2 else "even"} for i in range(1797)
        ]
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return [f"--data.group_mapping={path}"]
    bunch = load_breast_cancer(as_frame=True)
    table = bunch.data.assign(target=bunch.target.map(dict(enumerate(bunch.target_names))))
    table["site"] = ["odd" if i % 2 else "even" for i in range(len(table))]
    path = tmp_path / "table.csv"
    table.to_csv(path, index=False)
    return [f"--data.path={path}", "--data.group_column=site"]


def test_group_confusion_counts_each_sample_in_its_group() -> None:
    logits = torch.eye(3)[[0, 1, 2, 0, 0]]  # predicted classes 0, 1, 2, 0, 0
    target, group = torch.tensor([0, 1, 1, 0, 2]), torch.tensor([0, 0, 1, 1, 1])
    metric = GroupConfusion(num_groups=2, num_classes=3)
    metric.update(logits, target, group)
    counts = metric.compute()
    assert counts[0].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert counts[1].tolist() == [[1, 0, 0], [0, 0, 1], [1, 0, 0]]


def test_table_and_gaps_of_hand_made_counts() -> None:
    counts = torch.zeros(3, 2, 2)
    counts[0] = torch.tensor([[5, 0], [0, 5]])  # "a": all right
    counts[1] = torch.tensor([[4, 1], [2, 3]])  # "b": 7 of 10
    rows = per_group_table(counts, ["a", "b", "empty"], ["x", "y"])
    assert [row["group"] for row in rows] == ["a", "b"]  # a group without test samples is left out
    assert [row["support"] for row in rows] == [10, 10]
    assert rows[1]["acc"] == pytest.approx(0.7)
    f1_x, f1_y = 2 * 4 / (2 * 4 + 1 + 2), 2 * 3 / (2 * 3 + 2 + 1)
    assert rows[1]["f1_macro"] == pytest.approx((f1_x + f1_y) / 2)
    gaps = largest_gaps(rows, threshold=0.25, min_size=10)
    assert gaps["acc"] == {
        "gap": pytest.approx(0.3), "best": "a", "worst": "b", "flagged": True, "too_small": [],
    }  # fmt: skip
    assert not largest_gaps(rows, threshold=0.35, min_size=10)["acc"]["flagged"]


def test_group_f1_is_the_overall_metric_on_the_groups_samples() -> None:
    """False positives into a class the group lacks lower its macro-F1, as torchmetrics has it."""
    matrix = torch.tensor([[8, 0, 2], [0, 10, 0], [0, 0, 0]])  # class "z": none, predicted twice
    target = torch.repeat_interleave(torch.arange(3), matrix.sum(dim=1))
    predicted = torch.cat([torch.repeat_interleave(torch.arange(3), row) for row in matrix])
    expected = MulticlassF1Score(3, average="macro")(predicted, target)
    (row,) = per_group_table(matrix[None].float(), ["g"], ["x", "y", "z"])
    assert row["f1_macro"] == pytest.approx(float(expected))
    assert row["f1_macro"] < (2 * 8 / (2 * 8 + 2) + 1) / 2  # what ignoring "z" gave


def test_groups_below_the_minimum_size_do_not_decide_the_gap() -> None:
    rows = [
        {"group": "large", "support": 100, "acc": 0.90, "f1_macro": 0.90},
        {"group": "three", "support": 3, "acc": 0.33, "f1_macro": 0.30},
        {"group": "other", "support": 80, "acc": 0.88, "f1_macro": 0.87},
    ]
    gaps = largest_gaps(rows, threshold=0.05, min_size=30)
    assert gaps["acc"]["worst"] == "other" and not gaps["acc"]["flagged"]
    assert gaps["acc"]["too_small"] == ["three"]
    alone = largest_gaps(rows[:2], threshold=0.05, min_size=30)["acc"]
    assert alone["gap"] is None and not alone["flagged"]  # one large group: nothing to compare


def test_test_reports_each_groups_metrics_and_flags_the_gap(tmp_path: Path) -> None:
    gap_settings = ["--data.max_group_gap=0", "--data.min_group_size=10"]  # two test batches
    cli = run("fit", tmp_path, *NO_LOGGER, *grouped_data(tmp_path), *gap_settings)
    report = json.loads((cli.run_dir / "group_metrics.json").read_text())
    # The same numbers by hand, from the model's predictions on the tested batches.
    right, seen = {}, {}
    cli.model.eval()
    loader = cli.datamodule.test_dataloader()
    names = cli.datamodule.group_names
    for _, (x, y, g) in zip(range(cli.trainer.limit_test_batches), loader, strict=False):
        with torch.no_grad():
            hits = cli.model(x).argmax(dim=1).eq(y)
        for code, hit in zip(g.tolist(), hits.tolist(), strict=True):
            right[names[code]] = right.get(names[code], 0) + hit
            seen[names[code]] = seen.get(names[code], 0) + 1
    assert {row["group"]: row["support"] for row in report["groups"]} == seen
    for row in report["groups"]:
        assert row["acc"] == pytest.approx(right[row["group"]] / seen[row["group"]])
    accuracies = [row["acc"] for row in report["groups"]]
    gap = report["gaps"]["acc"]
    assert gap["gap"] == pytest.approx(max(accuracies) - min(accuracies))
    assert gap["flagged"] == (gap["gap"] > 0)
    metrics = json.loads((cli.run_dir / "test_metrics.json").read_text())
    assert metrics["test/group_gap/acc"] == pytest.approx(gap["gap"])
    if not IMAGES:
        assert "site" not in cli.datamodule.state["columns"]  # a group is never a feature


def test_without_groups_no_group_report(fitted) -> None:
    assert fitted.datamodule.group_names is None
    assert not (fitted.run_dir / "group_metrics.json").exists()


@pytest.mark.skipif(not IMAGES, reason="group mappings are for images")
@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"id": "digits/0", "team": "a"}], "no column 'group'"),
        ([{"id": "digits/0", "group": "a"}, {"id": "digits/0", "group": "b"}], "mapped twice"),
        ([{"id": "cat.png", "group": "a"}], "none of its ids is a sample"),
    ],
)
def test_a_bad_group_mapping_is_refused(tmp_path: Path, rows: list[dict], message: str) -> None:
    with pytest.raises(DataError, match=message):
        run("fit", tmp_path, *NO_LOGGER, *grouped_data(tmp_path, rows))


@pytest.mark.skipif(IMAGES, reason="group columns are for tables")
def test_a_missing_group_column_is_refused(tmp_path: Path) -> None:
    args = grouped_data(tmp_path)
    table = pd.read_csv(tmp_path / "table.csv").drop(columns="site")
    table.to_csv(tmp_path / "table.csv", index=False)
    with pytest.raises(DataError, match="no column 'site'"):
        run("fit", tmp_path, *NO_LOGGER, *args)
