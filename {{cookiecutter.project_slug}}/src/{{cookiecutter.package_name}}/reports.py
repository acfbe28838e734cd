"""Files a person reads: test metrics as JSON, confusion matrices, pictures of the data.

Every picture is a file in the run directory, and is also sent to W&B or TensorBoard when
one of them is the run's logger (``publish_figure``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure
from torch import Tensor

from .evaluation import ReliabilityBins, bin_means


def save_table(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Rows with the same keys as CSV, the keys as the header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows with the same keys as aligned text: the first column left, the others right,
    floats to four places; what a person reads at the end of a run."""
    columns = list(rows[0])
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def save_metrics(metrics: Mapping[str, float], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: float(v) for k, v in metrics.items()}, indent=2) + "\n")
    return path


def confusion_figure(matrix: Tensor, class_names: Sequence[str], title: str) -> Figure:
    """Counts per (true, predicted) class; the diagonal is what the model got right."""
    counts = matrix.cpu().numpy()
    size = max(4.0, 0.5 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    ticks = range(len(class_names))
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    for (row, col), count in np.ndenumerate(counts):
        color = "white" if count > counts.max() / 2 else "black"
        ax.text(col, row, int(count), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    return fig


def labelled_mosaic(
    images: np.ndarray, labels: Sequence[tuple[str, str]], cols: int, title: str
) -> Figure:
    """(N, C, H, W) images tiled into one picture, each under its (text, colour) label.

    One picture on one axes, not an axes per image: 80 small axes took ~2 s to draw, at
    every validation end."""
    n, channels, height, width = images.shape
    rows, gap_x, gap_y = -(-n // cols), max(2, width // 8), max(4, height // 2)
    white = 255 if images.dtype == np.uint8 else float(images.max(initial=1.0))
    canvas = np.full(
        (channels, rows * (height + gap_y), cols * (width + gap_x) - gap_x), white, images.dtype
    )
    fig, ax = plt.subplots(figsize=(1.3 * cols, 1.7 * rows + 0.5))
    for i, (image, (text, color)) in enumerate(zip(images, labels, strict=True)):
        top, left = (i // cols) * (height + gap_y) + gap_y, (i % cols) * (width + gap_x)
        canvas[:, top : top + height, left : left + width] = image
        ax.text(left + width / 2, top - 0.5, text, ha="center", va="bottom", fontsize=7,
                color=color)  # fmt: skip
    pixels = canvas[0] if channels == 1 else canvas.transpose(1, 2, 0)
    gray = {"cmap": "gray", "vmin": 0, "vmax": white} if channels == 1 else {}
    ax.imshow(pixels, interpolation="nearest", **gray)
    ax.axis("off")
    fig.suptitle(title)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.5 / (1.7 * rows + 0.5))
    return fig


def prediction_grid(
    images: Tensor, true: Tensor, predicted: Tensor, class_names: Sequence[str], title: str
) -> Figure:
    """Images labelled with their true and predicted class; mistakes in red."""
    labels = [
        (f"{class_names[t]} → {class_names[p]}", "black" if t == p else "tab:red")
        for t, p in zip(true.tolist(), predicted.tolist(), strict=True)
    ]
    return labelled_mosaic(images.cpu().numpy(), labels, min(8, len(images)), title)


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


def publish_figure(
    figure: Figure, path: Path, loggers: Sequence = (), step: int | None = None
) -> Path:
    """Save ``figure`` as ``path``; send it to each W&B/TensorBoard logger under its stem.

    The file holds the latest picture; the loggers keep one per ``step``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=f"plots/{path.stem}", images=[str(path)], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(f"plots/{path.stem}", figure, step, close=False)
    plt.close(figure)
    return path


def class_balance(labels: Sequence[str], splits: Sequence[str]) -> Figure:
    """Samples per class, one bar per split."""
    names = sorted(set(labels))
    parts = sorted(set(splits), key=["train", "val", "test"].index)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(names) + 2), 3.5))
    width = 0.8 / len(parts)
    for k, part in enumerate(parts):
        counts = [
            sum(1 for y, s in zip(labels, splits, strict=True) if y == n and s == part)
            for n in names
        ]
        ax.bar(np.arange(len(names)) + k * width, counts, width, label=part)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=45, ha="right")
    ax.set(ylabel="samples")
    ax.set_title("Class balance", loc="left")
    ax.legend(ncols=len(parts), loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def reliability_figure(bins: ReliabilityBins, ece: float) -> Figure:
    """Accuracy per confidence bin against the diagonal a calibrated model would follow."""
    folded = ReliabilityBins(*(torch.cat([t[:-2], t[-2:].sum(0, keepdim=True)]) for t in bins))
    accuracy, confidence = (t.detach().cpu().numpy() for t in bin_means(folded))
    filled = folded.count.detach().cpu().numpy() > 0
    n_bins = len(accuracy)
    left = torch.arange(n_bins).numpy() / n_bins
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.bar(left[filled], accuracy[filled], width=1 / n_bins, align="edge", edgecolor="black",
           color="tab:blue", label="accuracy")  # fmt: skip
    ax.plot(left[filled] + 0.5 / n_bins, confidence[filled], "_", color="tab:red", ms=10, mew=2,
            label="mean confidence")  # fmt: skip
    ax.plot([0, 1], [0, 1], "--", color="gray", label="calibrated")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    ax.set_title(f"Reliability (ECE {ece:.4f})")
    ax.legend(loc="upper left", frameon=False)
    fig.tight_layout()
    return fig
