"""The search space of ``sweep``: YAML over any config key, as Optuna distributions.

Each key is an option as ``fit`` takes it on the command line, without the dashes::

    model.lr: {type: float, low: 3.0e-4, high: 3.0e-2, log: true}
    data.init_args.batch_size: {type: categorical, choices: [32, 64, 128]}
    model.network.init_args.hidden: {type: categorical, choices: [[64, 32], [128, 64]]}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

KINDS = {"float": FloatDistribution, "int": IntDistribution}


class SpaceError(ValueError):
    """A search space that can't be read; the message names the file and the key."""


def read_space(path: Path) -> dict[str, BaseDistribution]:
    try:
        entries = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise SpaceError(f"{path}: can't read the search space: {error}") from None
    if not isinstance(entries, dict) or not entries:
        raise SpaceError(f"{path}: expected a mapping of config keys to ranges, see {__file__}")
    return {key: distribution(path, key, spec) for key, spec in entries.items()}


def distribution(path: Path, key: str, spec: Any) -> BaseDistribution:
    """One entry's distribution; YAML's ``1e-4`` (a string to PyYAML) is read as a number."""
    where = f"{path}: {key}"
    if not isinstance(spec, dict) or "type" not in spec:
        raise SpaceError(f"{where}: give a mapping with type float, int or categorical")
    spec = dict(spec)
    kind = spec.pop("type")
    if kind not in (*KINDS, "categorical"):
        raise SpaceError(f"{where}: unknown type {kind!r}; types: float, int, categorical")
    try:
        if kind == "categorical":
            choices = spec.pop("choices")
            # Optuna keeps plain values only: a list (layer sizes) travels as its JSON text.
            plain = [
                c if isinstance(c, (str, int, float, bool)) else json.dumps(c) for c in choices
            ]
            return CategoricalDistribution(plain, **spec)
        number = float if kind == "float" else int
        bounds = {k: number(float(spec.pop(k))) for k in ("low", "high")}
        if "step" in spec:
            spec["step"] = number(float(spec["step"]))
        return KINDS[kind](**bounds, **spec)
    except KeyError as missing:
        raise SpaceError(f"{where}: type {kind} needs {missing}") from None
    except (TypeError, ValueError) as error:
        raise SpaceError(f"{where}: {error}") from None


def centred_on_lr_finder(
    space: dict[str, BaseDistribution], lr_finder: Path, factor: float = 10.0
) -> dict[str, BaseDistribution]:
    """``model.lr`` searched log-uniformly within ``factor`` of the LR finder's suggestion
    (``tune`` writes it to ``lr_finder.json``): find the region first, then refine."""
    suggestion = json.loads(Path(lr_finder).read_text()).get("suggestion")
    if not suggestion:
        raise SpaceError(f"{lr_finder}: the LR finder made no suggestion to centre on")
    low, high = suggestion / factor, suggestion * factor
    return {**space, "model.lr": FloatDistribution(low, high, log=True)}


def overrides(params: dict[str, Any]) -> list[str]:
    """Sampled values as ``fit`` options."""
    return [f"--{key}={value}" for key, value in params.items()]
