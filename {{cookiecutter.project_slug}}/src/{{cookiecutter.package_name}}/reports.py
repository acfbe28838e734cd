"""Files a person reads after a run: test metrics as JSON and a confusion-matrix plot."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor


def save_metrics(metrics: Mapping[str, float], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: float(v) for k, v in metrics.items()}, indent=2) + "\n")
    return path


def save_confusion_matrix(matrix: Tensor, class_names: Sequence[str], path: Path) -> Path:
    """Counts per (true, predicted) class; the diagonal is what the model got right."""
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = matrix.cpu().numpy()
    size = max(4.0, 0.5 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    ticks = range(len(class_names))
    ax.set(
        xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title="Test confusion matrix"
    )
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    for (row, col), count in np.ndenumerate(counts):
        color = "white" if count > counts.max() / 2 else "black"
        ax.text(col, row, int(count), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def describe_run(run_dir: Path) -> str:
    """What the run left where: the last lines a person reads."""
    lines = [f"Run directory: {run_dir.resolve()}"]
    for entry in sorted(run_dir.iterdir()):
        if entry.is_dir():
            inside = sorted(p.name for p in entry.iterdir())
            more = f", ... ({len(inside)} entries)" if len(inside) > 3 else ""
            lines.append(f"  {entry.name + '/':<14} {', '.join(inside[:3])}{more}")
        else:
            lines.append(f"  {entry.name}")
    return "\n".join(lines)
