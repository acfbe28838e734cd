"""Why the model predicted what it did: Integrated Gradients for a few test samples.

Attributions are measured from the average training input (the model's standardisation mean),
not from zeros: a black image or an all-zero row is far from any real sample, an average one
is what "nothing special about this sample" means. Each sample is explained toward the class
the model predicted for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from captum.attr import IntegratedGradients
from matplotlib.patches import Patch
from torch import Tensor
from torch.utils.data import DataLoader

from .reports import format_table, publish_figure, save_table
from .system import Classifier

DEFAULT_SAMPLES = {"image": 8, "table": 128}  # a feature ranking needs more rows than a picture
TOP_FEATURES = 15


class Attribution(NamedTuple):
    """Per-sample attributions in the units of ``inputs`` (images: pixels in [0, 1])."""

    inputs: Tensor
    baselines: Tensor
    attributions: Tensor
    predicted: Tensor
    delta: Tensor  # completeness gap: attributions' sum minus f(input) - f(baseline)


def attribute(model: Classifier, x: Tensor, n_steps: int = 32, batch: int = 256) -> Attribution:
    """Integrated Gradients of the predicted class's logit, for raw inputs ``x``.

    ``uint8`` pixels become floats in [0, 1], exactly as ``Standardize`` scales them, so the
    logits are the model's own; the baseline is the training mean in those units. The model
    is put in eval mode on its device and left as it was; no parameter gradient is kept.
    """
    was_training, device = model.training, model.device
    dtype = model.standardize.mean.dtype
    model.eval()
    try:
        # Gradients even when called at the end of a test loop, which runs in inference
        # mode (a callback's on_test_end); tensors made there are cloned out of it.
        with torch.inference_mode(False), torch.enable_grad():
            inputs = (x.float() / 255 if x.dtype == torch.uint8 else x).to(device, dtype)
            inputs = inputs.clone()
            baselines = model.standardize.mean.clone().expand_as(inputs).contiguous()
            with torch.no_grad():
                predicted = model(inputs).argmax(dim=1)
            attributions, delta = IntegratedGradients(model).attribute(
                inputs, baselines, target=predicted, n_steps=n_steps,
                internal_batch_size=batch, return_convergence_delta=True,
            )  # fmt: skip
    finally:
        model.train(was_training)
    tensors = (inputs, baselines, attributions, predicted, delta)
    return Attribution(*(t.detach().cpu() for t in tensors))


def first_test_samples(datamodule, samples: int) -> tuple[Tensor, Tensor]:
    """The first ``samples`` test inputs (raw) and labels; extra batch elements are ignored."""
    dataset = datamodule.prepared.datasets["test"]
    collate = getattr(datamodule, "collate_fn", None)
    batch = next(iter(DataLoader(dataset, batch_size=samples, collate_fn=collate)))
    return batch[0], batch[1]


def explain(
    model: Classifier,
    datamodule,
    run_dir: Path,
    loggers: Sequence = (),
    samples: int | None = None,
    n_steps: int = 32,
) -> list[Path]:
    """Attribute the first test samples and write what a person reads; returns the files.

    Images: ``plots/attributions.png``, each image over its heat map. Tables:
    ``feature_attributions.csv``, every encoded feature ranked by mean |attribution|, and
    ``plots/attributions.png``, the top features. ``samples`` None: 8 images or 128 rows.
    """
    table = hasattr(datamodule, "feature_names")
    samples = samples or DEFAULT_SAMPLES["table" if table else "image"]
    if len(datamodule.prepared.datasets["test"]) == 0:
        print("Attributions: skipped, the test split is empty")
        return []
    x, y = first_test_samples(datamodule, samples)
    result = attribute(model, x, n_steps)
    plot = run_dir / "plots" / "attributions.png"
    if table:
        rows = feature_ranking(result.attributions, datamodule.feature_names)
        written = [save_table(rows, run_dir / "feature_attributions.csv")]
        print(format_table(rows[:5]))
        written.append(publish_figure(ranking_figure(rows, len(x)), plot, loggers))
    else:
        figure = image_figure(result, y, datamodule.class_names)
        written = [publish_figure(figure, plot, loggers)]
    where = ", ".join(str(path) for path in written)
    print(f"Attributions (integrated gradients, {len(x)} test samples): {where}")
    return written


def feature_ranking(attributions: Tensor, names: Sequence[str]) -> list[dict]:
    """One row per feature, by mean |attribution| over the samples, largest first."""
    mean_abs, mean = attributions.abs().mean(dim=0), attributions.mean(dim=0)
    rows = [
        {"feature": name, "mean_abs_attribution": float(a), "mean_attribution": float(m)}
        for name, a, m in zip(names, mean_abs, mean, strict=True)
    ]
    return sorted(rows, key=lambda row: -row["mean_abs_attribution"])


def ranking_figure(rows: Sequence[dict], samples: int):
    """The top features, largest at the top; red where they push on average toward the
    predicted class, blue where against it."""
    top = list(rows[:TOP_FEATURES])[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(top) + 1.2))
    colors = ["tab:red" if row["mean_attribution"] >= 0 else "tab:blue" for row in top]
    ax.barh([row["feature"] for row in top], [row["mean_abs_attribution"] for row in top],
            color=colors)  # fmt: skip
    ax.set(xlabel="mean |attribution| (logit of the predicted class)")
    ax.set_title(f"Feature attributions, {samples} test rows", loc="left")
    ax.tick_params(axis="y", labelsize=7)
    signs = [Patch(color="tab:red", label="toward"), Patch(color="tab:blue", label="against")]
    ax.legend(handles=signs, title="on average", loc="lower right", fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def image_figure(result: Attribution, labels: Tensor, class_names: Sequence[str]):
    """Each image (top) and its heat map, |attribution| summed over channels, over it."""
    count = len(result.inputs)
    fig, axes = plt.subplots(2, count, figsize=(1.6 * count, 3.6), squeeze=False)
    for i in range(count):
        pixels = result.inputs[i].numpy()
        image = pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0)
        cmap = "gray" if image.ndim == 2 else None
        heat = result.attributions[i].abs().sum(dim=0).numpy()
        axes[0, i].imshow(np.clip(image, 0, 1), cmap=cmap)
        axes[1, i].imshow(np.clip(image, 0, 1), cmap=cmap, alpha=0.4)
        axes[1, i].imshow(heat / max(heat.max(), 1e-12), cmap="inferno", alpha=0.7)
        true, pred = class_names[int(labels[i])], class_names[int(result.predicted[i])]
        axes[0, i].set_title(f"true {true} / pred {pred}", fontsize=7)
        for ax in axes[:, i]:
            ax.axis("off")
    fig.suptitle("Integrated gradients toward the predicted class (bright: most)")
    fig.tight_layout()
    return fig
