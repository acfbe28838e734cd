"""What ``cv`` makes of its folds: their scores, the out-of-fold predictions, and the
samples whose given label those predictions find implausible (confident learning)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

FOLD_FILES = ("val_metrics.json", "val_predictions.csv")  # each fold's, see ValidationReports


def fold_finished(run_dir: Path) -> bool:
    """A fold's fit wrote its validation predictions: the last thing it does."""
    return (run_dir / FOLD_FILES[1]).is_file()


def fold_scores(fold_dirs: list[Path]) -> dict[str, dict]:
    """``{metric: {mean, std, folds}}`` of each fold's best checkpoint on its validation
    fold; std is the sample standard deviation over the folds."""
    scores = [json.loads((d / FOLD_FILES[0]).read_text()) for d in fold_dirs]
    summary = {}
    for name in sorted(set().union(*scores)):
        values = [score.get(name, float("nan")) for score in scores]
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        summary[name] = {"mean": float(np.mean(values)), "std": std, "folds": values}
    return summary


def score_table(summary: dict[str, dict]) -> str:
    """One line per metric: mean ± std, then each fold's value."""
    folds = len(next(iter(summary.values()))["folds"]) if summary else 0
    lines = [f"{'metric':<12} {'mean ± std':>17}  " + " ".join(f"{k:>7}" for k in range(folds))]
    for name, s in summary.items():
        each = " ".join(f"{v:>7.4f}" for v in s["folds"])
        lines.append(f"{name:<12} {s['mean']:>8.4f} ± {s['std']:<6.4f}  {each}")
    return "\n".join(lines)


def out_of_fold(fold_dirs: list[Path]) -> pd.DataFrame:
    """Every validated sample's prediction by the fold that held it out: id, label,
    predicted, one probability column per class, fold."""
    parts = []
    for k, run_dir in enumerate(fold_dirs):
        texts = {"id": str, "label": str, "predicted": str}
        parts.append(pd.read_csv(run_dir / FOLD_FILES[1], dtype=texts).assign(fold=k))
    return pd.concat(parts, ignore_index=True)


def label_issues(predictions: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    """The samples cleanlab's ``find_label_issues`` flags, most implausible label first
    (ranked by self-confidence: the probability the model gave the label as given)."""
    from cleanlab.filter import find_label_issues  # only here: the other commands don't need it

    probabilities = predictions[class_names].to_numpy(dtype=float)
    given = pd.Categorical(predictions["label"], categories=class_names).codes
    ranked = find_label_issues(given, probabilities, return_indices_ranked_by="self_confidence")
    flagged = predictions.iloc[ranked]
    return pd.DataFrame({
        "rank": range(1, len(ranked) + 1),
        "id": flagged["id"].to_numpy(),
        "given": flagged["label"].to_numpy(),
        "suggested": [class_names[c] for c in probabilities[ranked].argmax(axis=1)],
        "self_confidence": probabilities[ranked, given[ranked]].round(6),
        "fold": flagged["fold"].to_numpy(),
    })  # fmt: skip
