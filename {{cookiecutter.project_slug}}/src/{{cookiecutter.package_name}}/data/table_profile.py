"""Pictures of the training table for the data report: distributions and missing cells."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def histograms(table: pd.DataFrame, limit: int = 30) -> Figure:
    """Distributions of the first ``limit`` numeric columns of the training rows.

    Each histogram is one filled outline (``stairs``), not a bar per bin, on a fixed grid
    without ``tight_layout``: drawing 30 of them the usual way took ~4 s of every fit."""
    numeric = [n for n in table.columns if pd.api.types.is_numeric_dtype(table[n])][:limit]
    cols = min(6, max(len(numeric), 1))
    rows = max(1, -(-len(numeric) // cols))
    spacing = {"hspace": 0.6, "wspace": 0.25, "left": 0.03, "right": 0.98, "bottom": 0.05}
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.2 * cols, 1.8 * rows + 0.4), squeeze=False,
        gridspec_kw={**spacing, "top": 1 - 0.6 / (1.8 * rows + 0.4)},
    )  # fmt: skip
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, numeric, strict=False):
        ax.axis("on")
        values = table[name].dropna().to_numpy(dtype=float)
        counts, edges = np.histogram(values[np.isfinite(values)], bins=30)
        ax.stairs(counts, edges, fill=True, color="tab:blue")
        ax.set_title(name, fontsize=7)
        ax.set_yticks([])  # the shape is what a reader looks for here
        ax.xaxis.set_major_locator(MaxNLocator(3))
        ax.tick_params(labelsize=6)
    fig.suptitle("Training features")
    return fig


def missing_map(table: pd.DataFrame, limit: int = 1000) -> Figure:
    """Missing cells (shaded) of up to ``limit`` training rows, evenly spaced."""
    rows = table.iloc[np.linspace(0, len(table) - 1, min(limit, len(table))).astype(int)]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.25 * len(table.columns) + 2), 4))
    ax.imshow(rows.isna().to_numpy(), aspect="auto", cmap="Greys", vmin=0, vmax=1,
              interpolation="nearest")  # fmt: skip
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=90, fontsize=6)
    ax.set(ylabel="training rows", title=f"Missing values ({int(table.isna().sum().sum())} cells)")
    fig.tight_layout()
    return fig
