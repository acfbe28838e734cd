"""What the network does inside: dead units per layer, first-layer filters, activation maps.

A dead unit is a ReLU's output (a convolution's channel, a linear layer's neuron) that is never
positive on the whole validation split: it passes no gradient, so it learns nothing more; a
large share in a layer is a health signal beside the gradient monitor (a too-high learning
rate, a bad initialisation). Activations are read with forward hooks, which work on any module;
torchvision's ``create_feature_extractor`` would trace the network with FX, which fails on
data-dependent control flow.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .attribution import first_test_samples
from .reports import labelled_mosaic, publish_figure
from .system import Classifier

SAMPLES = 4  # test images whose activation maps are drawn
DEPTHS = 3  # layers drawn: the first, middle and last ReLU with a spatial output
CHANNELS = 4  # per image and layer: its most active channels
FILTERS = 64  # first-layer filters drawn at most


@contextmanager
def recording(modules: Mapping[str, nn.Module], record: Callable[[str, Tensor], None]) -> Iterator:
    """Calls ``record(name, output)`` on every forward of these modules while open."""
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: record(name, out))
        for name, module in modules.items()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def relu_layers(network: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in network.named_modules() if isinstance(m, nn.ReLU)}


def unit_axis_first(output: Tensor) -> Tensor:
    """``N, U, ...`` -> ``U, N*...``: one row per unit (channel or neuron)."""
    return output.detach().transpose(0, 1).reshape(output.shape[1], -1)


def dead_units(model: Classifier, loader: DataLoader) -> list[dict]:
    """Per ReLU: its units and how many never fire on ``loader``'s inputs. A ReLU module
    applied at several widths (torchvision's Bottleneck) counts each width on its own."""
    fired: dict[tuple[str, int], Tensor] = {}

    def record(name: str, output: Tensor) -> None:
        alive = (unit_axis_first(output) > 0).any(dim=1)
        key = (name, len(alive))
        fired[key] = fired[key] | alive if key in fired else alive

    with recording(relu_layers(model.network), record), evaluating(model):
        for batch in loader:
            model(batch[0].to(model.device))
    names = [name for name, _ in fired]
    return [
        {
            "layer": name if names.count(name) == 1 else f"{name} ({units} units)",
            "units": units,
            "dead": int((~alive).sum()),
            "dead_share": float((~alive).float().mean()),
        }
        for (name, units), alive in fired.items()
    ]


def spatial_activations(model: Classifier, x: Tensor) -> dict[str, Tensor]:
    """``DEPTHS`` ReLU outputs with a spatial map (first, middle, last), for inputs ``x``;
    a module applied twice keeps its first output."""
    outputs: dict[str, Tensor] = {}

    def record(name: str, output: Tensor) -> None:
        if output.ndim == 4 and name not in outputs:
            outputs[name] = output.detach().float().cpu()

    with recording(relu_layers(model.network), record), evaluating(model):
        model(x.to(model.device))
    names = list(outputs)
    picked = sorted({round(i) for i in np.linspace(0, len(names) - 1, DEPTHS)}) if names else []
    return {names[i]: outputs[names[i]] for i in picked}


@contextmanager
def evaluating(model: nn.Module) -> Iterator:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def first_conv(network: nn.Module) -> tuple[str, nn.Conv2d] | None:
    return next(((n, m) for n, m in network.named_modules() if isinstance(m, nn.Conv2d)), None)


def inspect(model: Classifier, datamodule, run_dir: Path, loggers: Sequence = ()) -> Path:
    """Write ``network_insides.json`` and its pictures in ``plots/``; returns the JSON's path.

    Dead units over the validation split (``plots/dead_units.png``, logged per layer as
    ``dead_units/<layer>``); for a convolutional network also the first layer's filters
    (``plots/first_layer_filters.png``) and the activation maps of the first test images at
    a few depths (``plots/activation_maps.png``), each sample named by its id in the JSON;
    the model graph in TensorBoard when it is a logger with ``log_graph: true``.
    """
    report: dict = {}
    plots = run_dir / "plots"
    collate = getattr(datamodule, "collate_fn", None)
    # Streamed shards keep no validation split in memory: no dead-unit count for them.
    if len(validation := datamodule.prepared.datasets.get("val", [])):
        loader = DataLoader(validation, batch_size=256, collate_fn=collate)
        report["dead_units"] = rows = dead_units(model, loader)
        publish_figure(dead_units_figure(rows), plots / "dead_units.png", loggers)
        for logger in loggers:
            logger.log_metrics({f"dead_units/{row['layer']}": row["dead_share"] for row in rows})
    x, ids = first_test_inputs(datamodule)
    if (conv := first_conv(model.network)) is not None:
        name, layer = conv
        report["first_layer_filters"] = {"layer": name, "shape": list(layer.weight.shape)}
        figure = filters_figure(name, layer.weight)
        publish_figure(figure, plots / "first_layer_filters.png", loggers)
    if x is not None and (maps := spatial_activations(model, x)):
        report["activation_maps"] = strongest_channels(maps, ids)
        figure = activations_figure(x, report["activation_maps"], maps)
        publish_figure(figure, plots / "activation_maps.png", loggers)
    if x is not None:
        log_graph(model, x, loggers)
    path = run_dir / "network_insides.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    if "dead_units" in report:
        rows = report["dead_units"]
        dead = ", ".join(f"{r['layer']} {r['dead']}/{r['units']}" for r in rows) or "no ReLU"
        print(f"Dead units on the validation split: {dead}; see {path}")
    return path


def first_test_inputs(datamodule) -> tuple[Tensor | None, list[str]]:
    """The first ``SAMPLES`` test inputs and their ids (streamed shards: their positions)."""
    data = datamodule.prepared
    if not hasattr(data, "ids"):
        if not len(data.datasets["test"]):
            return None, []
        x, _ = first_test_samples(datamodule, SAMPLES)
        return x, [f"test/{i}" for i in range(len(x))]
    ids = [i for i, split in zip(data.ids, data.splits, strict=True) if split == "test"]
    return (datamodule.inputs_of(ids[:SAMPLES]), ids[:SAMPLES]) if ids else (None, [])


def strongest_channels(maps: Mapping[str, Tensor], ids: Sequence[str]) -> list[dict]:
    """Per sample and layer: its ``CHANNELS`` most active channels (mean over the map)."""
    rows = []
    for layer, output in maps.items():
        means = output.mean(dim=(2, 3))
        for sample, row in zip(ids, means, strict=True):
            top = row.argsort(descending=True)[:CHANNELS]
            rows.append(
                {"sample": sample, "layer": layer, "channels": top.tolist(),
                 "means": row[top].tolist()}
            )  # fmt: skip
    return rows


def log_graph(model: Classifier, x: Tensor, loggers: Sequence) -> None:
    """The model graph, traced on real inputs, in each TensorBoard logger that asks for it."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            # on_test_end runs in inference mode, which tracing can't record
            with torch.inference_mode(False), evaluating(model):
                logger.log_graph(model, x.clone())


def dead_units_figure(rows: Sequence[dict]):
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(rows) + 1.2))
    ax.barh([row["layer"] for row in rows][::-1], [row["dead_share"] for row in rows][::-1])
    ax.set(xlim=(0, 1), xlabel="share of units never active on the validation split")
    ax.set_title("Dead ReLU units per layer", loc="left")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


def filters_figure(name: str, weight: Tensor):
    """Each filter scaled to its own range; colour when it reads three channels."""
    w = weight.detach().float().cpu()[:FILTERS]
    w = w if w.shape[1] == 3 else w.mean(dim=1, keepdim=True)
    labels = [(str(i), "black") for i in range(len(w))]
    title = f"First-layer filters ({name}, {'x'.join(map(str, weight.shape))})"
    return labelled_mosaic(scaled(w).numpy(), labels, min(8, len(w)), title)


def activations_figure(x: Tensor, rows: Sequence[dict], maps: Mapping[str, Tensor]):
    """One row per sample: the image, then its strongest channels at each depth, each map
    scaled to its own range and enlarged to the image's size."""
    images = x.float().cpu() / (255 if x.dtype == torch.uint8 else 1)
    size, channels = images.shape[-2:], images.shape[1]
    depth = {layer: i + 1 for i, layer in enumerate(maps)}
    tiles, labels = [], []
    for i, sample in enumerate(dict.fromkeys(row["sample"] for row in rows)):
        tiles.append(images[i].clamp(0, 1))
        labels.append((sample, "black"))
        for row in (row for row in rows if row["sample"] == sample):
            chosen = maps[row["layer"]][i, row["channels"]][:, None]
            enlarged = nn.functional.interpolate(chosen, size=size, mode="nearest")
            tiles += list(scaled(enlarged).expand(-1, channels, -1, -1))
            labels += [(f"d{depth[row['layer']]} ch {c}", "black") for c in row["channels"]]
    layers = ", ".join(f"d{i} {layer}" for layer, i in depth.items())
    title = f"Activation maps, each image's most active channels ({layers})"
    return labelled_mosaic(torch.stack(tiles).numpy(), labels, 1 + len(maps) * CHANNELS, title)


def scaled(t: Tensor) -> Tensor:
    """(N, ...) each to [0, 1] by its own minimum and maximum."""
    low = t.amin(dim=tuple(range(1, t.ndim)), keepdim=True)
    high = t.amax(dim=tuple(range(1, t.ndim)), keepdim=True)
    return (t - low) / (high - low).clamp_min(1e-12)
